"""Running and measuring the benchmark's child processes, and the services they need.

Scenario
    benchmarks/whole_process.py needs each program's wall time and its own peak RSS: not
    those of the process that started it, nor of the Prefect server and the sandbox it talks
    to. It must not time a child against a server still busy with the one before, it needs a
    sandbox to talk to, and nothing it starts may outlive it: not on a failure, a timeout,
    Ctrl-C or SIGTERM.

Solution
    run_measured starts each child through LAUNCHER, a bare `python -I -S` that times it and
    takes that child's own `ru_maxrss` from `os.wait4`, in a process group of its own that is
    killed on the way out. group_cpu_seconds reads a process group's CPU time from /proc, and
    wait_quiet waits for it to go quiet. SandboxProcess runs `python -m sandbox --records N`
    with its control port. sigterm_as_interrupt makes SIGTERM unwind like Ctrl-C. Measured is
    one run, Series the repetitions of one program; BenchmarkError is what any of it raises
    when the figures would mean nothing.

How to run
    Not on its own: benchmarks/whole_process.py imports it (`make bench`).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # every child's cwd, for its `-m` modules


class BenchmarkError(RuntimeError):
    """A child failed, or a ledger was not exact: the figures would mean nothing."""


# -- measuring one child process --------------------------------------------------------------


@dataclass
class Measured:
    seconds: float
    peak_rss_kib: int
    server_cpu: float | None = None  # CPU seconds the Prefect server used meanwhile
    settled: float | None = None  # seconds waited for the server to go quiet before it
    cpu_seconds: float | None = None  # the child's own user + system CPU time


@dataclass
class Series:
    """The repetitions of one program at one record count (None: size-independent)."""

    records: int | None
    program: str
    runs: list[Measured] = field(default_factory=list)
    requests: str = ""  # records/rates/ledger requests of the last repetition
    phases: list[dict[str, float]] = field(default_factory=list)  # each run's seconds by phase

    @property
    def seconds(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def spread(self) -> str:
        times = [run.seconds for run in self.runs]
        return f"{min(times):.2f}-{max(times):.2f}"

    @property
    def rss_mib(self) -> float:
        return statistics.median(run.peak_rss_kib for run in self.runs) / 1024

    @property
    def server_cpu(self) -> float | None:
        figures = [run.server_cpu for run in self.runs if run.server_cpu is not None]
        return statistics.median(figures) if figures else None

    @property
    def settled(self) -> float | None:
        figures = [run.settled for run in self.runs if run.settled is not None]
        return statistics.median(figures) if figures else None


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


LAUNCHER = """
import json, os, subprocess, sys, time
spec = json.load(sys.stdin)
with open(spec["log"], "wb") as log:
    started = time.perf_counter()
    child = subprocess.Popen(
        spec["argv"], cwd=spec["cwd"], env=spec["env"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
code = os.waitstatus_to_exitcode(status)
cpu = usage.ru_utime + usage.ru_stime
print(json.dumps({"seconds": seconds, "peak_rss_kib": usage.ru_maxrss, "cpu": cpu, "exit": code}))
"""
"""Starts one child, times it and takes its own `ru_maxrss` from `os.wait4`.

Why not Popen + wait4 from here: on Linux a child's `ru_maxrss` starts at the RSS of the
process it was forked from (exec records the old address space's high-water mark), and this
process has imported Prefect. The launcher is a bare `python -I -S` of a few MiB, below any
child's own peak, so the figure is the child's.
"""


def run_measured(argv: list[str], env: dict[str, str], log_path: Path, timeout: float) -> Measured:
    """Run `argv` to completion as a child; its wall time, own peak RSS (KiB) and CPU time."""
    spec = {"argv": argv, "cwd": str(PROJECT_ROOT), "env": env, "log": str(log_path)}
    launcher = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", LAUNCHER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: stopped with the child, below
    )
    try:
        out, _ = launcher.communicate(json.dumps(spec), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchmarkError(
            f"{shlex.join(argv)} was killed after {timeout:.0f} s; the end of {log_path}:\n"
            f"{tail(log_path)}"
        ) from None
    finally:
        if launcher.poll() is None:  # a timeout, Ctrl-C or SIGTERM: nothing outlives us
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    if launcher.returncode != 0 or not out.strip():
        raise BenchmarkError(f"the launcher of {shlex.join(argv)} failed ({launcher.returncode})")
    result = json.loads(out)
    if result["exit"] != 0:
        raise BenchmarkError(
            f"{shlex.join(argv)} failed (exit code {result['exit']}); "
            f"the end of {log_path}:\n{tail(log_path)}"
        )
    return Measured(result["seconds"], result["peak_rss_kib"], cpu_seconds=result["cpu"])


# -- the Prefect server's CPU -----------------------------------------------------------------


def group_cpu_seconds(pgid: int) -> float | None:
    """CPU seconds used so far by the processes of a process group (and their reaped children)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, found = 0.0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid:  # fields from the state on: state ppid pgrp ... utime stime
            found = True
            total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total if found else None


def wait_quiet(pgid: int, window: float = 1.0, busy: float = 0.1, limit: float = 120.0) -> float:
    """Wait until the group uses under `busy` of a CPU over `window` s; the seconds it was busy.

    After a cold run the server goes on digesting its events and task runs for seconds; on
    two cores a child started meanwhile would be timed against it.
    """
    started = time.perf_counter()
    last = group_cpu_seconds(pgid)
    while last is not None and time.perf_counter() - started < limit:
        time.sleep(window)
        now = group_cpu_seconds(pgid)
        if now is None or now - last < busy * window:
            break
        last = now
    return max(0.0, time.perf_counter() - started - window)


def run_beside_server(
    argv: list[str],
    env: dict[str, str],
    log_path: Path,
    timeout: float,
    server_pgid: int | None,
    settle: bool,
) -> Measured:
    """run_measured, once the server's group is quiet if `settle`; its CPU seconds meanwhile."""
    settled = wait_quiet(server_pgid) if settle and server_pgid is not None else None
    before = group_cpu_seconds(server_pgid) if server_pgid is not None else None
    measured = run_measured(argv, env, log_path, timeout)
    after = group_cpu_seconds(server_pgid) if server_pgid is not None else None
    if before is not None and after is not None:
        measured.server_cpu = after - before
    measured.settled = settled
    return measured


# -- the sandbox process ----------------------------------------------------------------------


class SandboxProcess:
    """`python -m sandbox --records N` in the background, with its control port."""

    def __init__(self, records: int, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "--records", str(records)],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        try:
            line = self.process.stdout.readline() if self.process.stdout else ""
            if not line:
                self.process.wait(timeout=10)
                raise BenchmarkError(
                    f"python -m sandbox --records {records} exited with code "
                    f"{self.process.returncode} before serving; the end of {log_path}:\n"
                    f"{tail(log_path)}"
                )
            self.urls: dict[str, str] = json.loads(line)
        except BaseException:
            self.stop()
            raise
        # Anything it prints later must not fill the pipe and block it.
        threading.Thread(target=self._drain, args=(self.process.stdout,), daemon=True).start()

    @staticmethod
    def _drain(stream: TextIO | None) -> None:
        if stream is not None:
            for _ in stream:
                pass

    def control(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        from benchmarks.ledger_sync_vs_httpx import control

        return control(self.urls, path, body)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# -- signals ----------------------------------------------------------------------------------


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so that every `finally` stops what it started."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
