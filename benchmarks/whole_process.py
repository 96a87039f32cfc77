"""Benchmark: the flagship as a user runs it, every program timed as a whole process.

Scenario
    benchmarks/ledger_sync_vs_httpx.py times `ledger_sync` inside a process that has already
    imported Prefect and talked to the server: a figure no user ever sees. A user types
    `python -m flows.ledger_sync` and waits for the interpreter to start, Prefect and the
    project to import, the run to talk to its server and upstreams, and the process to exit;
    then runs it again, expecting a rerun with nothing new to do to cost next to nothing. How
    much slower than a bare script is that, what does the rerun cost beyond the imports, and
    how does memory grow with the number of records?

Solution
    One Prefect server for the whole benchmark (a temporary PREFECT_HOME, results stored
    there), and per record count one fresh `python -m sandbox --records N` process, faults
    off, with the block documents saved against it. Then, `--repeat` times and side by side,
    each of these programs as a child process of its own:
      floor   a bare asyncio + httpx script doing the same HTTP work (`bare_sync` of
              benchmarks/ledger_sync_vs_httpx.py), the ledger reset after it;
      cold    `python -m flows.ledger_sync batch_size=500` with the ledger reset and a fresh,
              empty result storage and ledger index (RESILIENT_FLOWS_LEDGER_INDEX_URL) of
              its own, so that every cold run is really cold;
      no-op   the same command again, same storage and index, nothing changed;
    and once for the whole benchmark the import floor, `python -c "import prefect"` and
    `python -c "import flows.ledger_sync"`: the fixed cost nobody can beat.
    Each child is timed with `time.perf_counter` around it, and its own peak RSS taken from
    `os.wait4` (that child's `ru_maxrss`, not RUSAGE_CHILDREN; the server and the sandbox
    are other processes and not counted). A bare `python -I -S` launcher starts each child:
    one forked straight from this process, which has imported Prefect, would start its
    `ru_maxrss` at this process's RSS (see LAUNCHER). Before each child it waits for the
    Prefect server to go quiet: after a cold run the server goes on digesting its events and
    task runs for seconds, which on two cores would be timed against the next child
    (`--no-settle` starts at once); the server's CPU time during each child is reported, as
    it is part of what a run costs. After every floor, cold and no-op run the ledger must
    be exact (its total equals the sandbox's expected total, every valid record held exactly
    once) and a no-op must leave it unchanged; anything else fails the benchmark loudly. The
    report gives medians, min-max, peak RSS, the HTTP requests each program made
    (records/rates/ledger, from the sandbox's counters) and the ratios: cold / floor,
    cold / no-op, the cold run's memory growth from the smallest to the largest size, and
    what a no-op costs beyond its imports. Every process it started is stopped on the way
    out, failure and Ctrl-C included.

How to run
    make bench                                                    # both benchmarks
    .venv/bin/python -m benchmarks.whole_process                  # 100k and 1M records
    .venv/bin/python -m benchmarks.whole_process --quick --repeat 1   # 10k, a smoke run
    .venv/bin/python -m benchmarks.whole_process --records 100000 --markdown bench.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PAGE_SIZE = 500
DEFAULT_RECORDS = [100_000, 1_000_000]
QUICK_RECORDS = [10_000]

FLOOR_CODE = (
    "import asyncio, json, sys; from benchmarks.ledger_sync_vs_httpx import bare_sync; "
    f"asyncio.run(bare_sync(json.loads(sys.argv[1]), {PAGE_SIZE}))"
)
FLOW_ARGS = ["-m", "flows.ledger_sync", f"batch_size={PAGE_SIZE}"]
IMPORTS = {
    "import prefect": ["-c", "import prefect"],
    "import flows.ledger_sync": ["-c", "import flows.ledger_sync"],
}
FLOOR, COLD, NOOP = "floor (asyncio+httpx)", "ledger_sync cold", "ledger_sync no-op rerun"
INDEX_ENV = "RESILIENT_FLOWS_LEDGER_INDEX_URL"


class BenchmarkError(RuntimeError):
    """A child failed, or a ledger was not exact: the figures would mean nothing."""


# -- measuring one child process --------------------------------------------------------------


@dataclass
class Measured:
    seconds: float
    peak_rss_kib: int
    server_cpu: float | None = None  # CPU seconds the Prefect server used meanwhile
    settled: float | None = None  # seconds waited for the server to go quiet before it


@dataclass
class Series:
    """The repetitions of one program at one record count (None: size-independent)."""

    records: int | None
    program: str
    runs: list[Measured] = field(default_factory=list)
    requests: str = ""  # records/rates/ledger requests of the last repetition

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
print(json.dumps({"seconds": seconds, "peak_rss_kib": usage.ru_maxrss, "exit_code": code}))
"""
"""Starts one child, times it and takes its own `ru_maxrss` from `os.wait4`.

Why not Popen + wait4 from here: on Linux a child's `ru_maxrss` starts at the RSS of the
process it was forked from (exec records the old address space's high-water mark), and this
process has imported Prefect. The launcher is a bare `python -I -S` of a few MiB, below any
child's own peak, so the figure is the child's.
"""


def run_measured(argv: list[str], env: dict[str, str], log_path: Path, timeout: float) -> Measured:
    """Run `argv` to completion as a child; its wall time and its own peak RSS (KiB)."""
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
    if result["exit_code"] != 0:
        raise BenchmarkError(
            f"{shlex.join(argv)} failed (exit code {result['exit_code']}); "
            f"the end of {log_path}:\n{tail(log_path)}"
        )
    return Measured(result["seconds"], result["peak_rss_kib"])


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


def exact_ledger(sandbox: SandboxProcess, what: str) -> dict[str, Any]:
    """The ledger's state, after checking it holds every valid record exactly once."""
    ledger = sandbox.control("/ledger")
    expected = sandbox.control("/expected")
    total, want = ledger["summary"]["total_eur"], expected["total_eur"]
    if total != want:
        raise BenchmarkError(f"{what}: the ledger holds {total} EUR, {want} EUR expected")
    net = ledger["net_applications"]
    twice = {record_id: n for record_id, n in net.items() if n > 1}
    if twice:
        sample = dict(list(twice.items())[:5])
        raise BenchmarkError(f"{what}: {len(twice)} records applied more than once: {sample}")
    missing = set(expected["entries"]) - set(net)
    if missing:
        raise BenchmarkError(f"{what}: {len(missing)} valid records are not in the ledger")
    return ledger


def request_counts(counters: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    """Requests to records/rates/ledger since `before` (or since the last reset)."""

    def count(*services: str) -> int:
        now = sum(counters[s]["requests"] for s in services)
        return now - (sum(before[s]["requests"] for s in services) if before else 0)

    return f"{count('records')}/{count('rates', 'rates_fallback')}/{count('ledger')}"


# -- the benchmark ----------------------------------------------------------------------------


@dataclass
class Bench:
    home: Path
    env: dict[str, str]
    repeat: int
    timeout: float
    settle: bool = True
    server_pgid: int | None = None
    results: list[Series] = field(default_factory=list)

    def series(self, records: int | None, program: str) -> Series:
        for series in self.results:
            if (series.records, series.program) == (records, program):
                return series
        series = Series(records, program)
        self.results.append(series)
        return series

    def measure(
        self, records: int | None, program: str, argv: list[str], env: dict[str, str], log: Path
    ) -> Measured:
        pgid = self.server_pgid
        settled = wait_quiet(pgid) if self.settle and pgid is not None else None
        before = group_cpu_seconds(pgid) if pgid is not None else None
        measured = run_measured([sys.executable, *argv], env, log, self.timeout)
        after = group_cpu_seconds(pgid) if pgid is not None else None
        if before is not None and after is not None:
            measured.server_cpu = after - before
        measured.settled = settled
        self.series(records, program).runs.append(measured)
        size = "" if records is None else f"{records:,} records, "
        quiet = settled is not None and settled >= 0.05
        waited = f" (after {settled:.1f} s for the server to go quiet)" if quiet else ""
        print(
            f"  {size}{program}: {measured.seconds:.2f} s, {measured.peak_rss_kib / 1024:.0f} MiB"
            f"{waited}",
            file=sys.stderr,
            flush=True,
        )
        return measured

    def import_floor(self) -> None:
        logs = self.home / "imports"
        logs.mkdir()
        for i in range(self.repeat):
            for program, argv in IMPORTS.items():
                log = logs / f"{program.split()[-1]}-{i}.log"
                self.measure(None, program, argv, self.env, log)

    def size(self, records: int) -> None:
        from deployments.stack import register_blocks, save_sandbox_blocks

        size_dir = self.home / f"records-{records}"
        size_dir.mkdir()
        sandbox = SandboxProcess(records, self.env, size_dir / "sandbox.log")
        try:
            register_blocks()
            save_sandbox_blocks(sandbox.urls)
            floor = ["-c", FLOOR_CODE, json.dumps(sandbox.urls)]
            for i in range(self.repeat):
                sandbox.control("/reset", {})
                self.measure(records, FLOOR, floor, self.env, size_dir / f"floor-{i}.log")
                exact_ledger(sandbox, f"floor, {records} records")
                self.series(records, FLOOR).requests = request_counts(sandbox.control("/counters"))
                sandbox.control("/reset", {})

                run_dir = size_dir / f"run-{i}"  # fresh storage and index: really cold
                run_dir.mkdir()
                env = {**self.env, **flow_environment(run_dir)}
                self.measure(records, COLD, FLOW_ARGS, env, run_dir / "cold.log")
                after_cold = exact_ledger(sandbox, f"cold run, {records} records")
                counters = sandbox.control("/counters")
                self.series(records, COLD).requests = request_counts(counters)

                self.measure(records, NOOP, FLOW_ARGS, env, run_dir / "no-op.log")
                after_noop = exact_ledger(sandbox, f"no-op rerun, {records} records")
                if after_noop != after_cold:
                    raise BenchmarkError(
                        f"no-op rerun, {records} records: it changed the ledger "
                        f"({after_cold['summary']} before, {after_noop['summary']} after)"
                    )
                self.series(records, NOOP).requests = request_counts(
                    sandbox.control("/counters"), counters
                )
        finally:
            sandbox.stop()


def flow_environment(run_dir: Path) -> dict[str, str]:
    """A ledger_sync run's own result storage and ledger index, under `run_dir`."""
    return {
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(run_dir / "storage"),
        INDEX_ENV: f"sqlite:///{run_dir / 'ledger-index.sqlite'}",
    }


# -- the report -------------------------------------------------------------------------------


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return done.stdout


def machine() -> list[tuple[str, str]]:
    cpuinfo = Path("/proc/cpuinfo")
    models = [
        line.split(":", 1)[1].strip()
        for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
        if line.startswith("model name")
    ]
    meminfo = Path("/proc/meminfo")
    mem = next(
        (
            f"{int(line.split()[1]) / 1024**2:.1f} GiB"
            for line in (meminfo.read_text().splitlines() if meminfo.exists() else [])
            if line.startswith("MemTotal:")
        ),
        "unknown",
    )
    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = git("status", "--porcelain", "--", "flows", "toolkit", "blocks", "sandbox")
    code = f"{PROJECT_ROOT} at {commit}" + (
        f", uncommitted changes: {', '.join(line[3:] for line in changed.splitlines())}"
        if changed
        else ", as committed"
    )
    return [
        ("nproc", str(len(os.sched_getaffinity(0)))),
        ("CPU", models[0] if models else platform.processor() or "unknown"),
        ("memory", mem),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("Prefect", package_version("prefect")),
        ("httpx", package_version("httpx")),
        ("flow code", code),
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]


def commands(api_url: str) -> list[tuple[str, str]]:
    from deployments.stack import prefect_cli

    py = sys.executable
    home = "<home>"
    return [
        (
            "every child",
            f"cwd {PROJECT_ROOT}; PREFECT_HOME={home} PREFECT_API_URL={api_url} "
            "PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_LOGGING_LEVEL=WARNING "
            f"PREFECT_RESULTS_LOCAL_STORAGE_PATH={home}/storage unless set below",
        ),
        (
            "server",
            f"{prefect_cli()} server start --host 127.0.0.1 --port <port> "
            "(deployments.stack.start_server, once)",
        ),
        ("sandbox", f"{py} -m sandbox --records <N> (one process per size, faults off)"),
        ("blocks", "deployments.stack.register_blocks() + save_sandbox_blocks(urls), per size"),
        ("floor", f"{py} -c {shlex.quote(FLOOR_CODE)} '<sandbox urls json>'; POST /reset"),
        (
            "cold",
            f"POST /reset; PREFECT_RESULTS_LOCAL_STORAGE_PATH=<run>/storage "
            f"{INDEX_ENV}=sqlite:///<run>/ledger-index.sqlite {shlex.join([py, *FLOW_ARGS])} "
            "(<run> a fresh empty directory per repetition)",
        ),
        ("no-op", "the cold command again, same <run>, right after its cold run"),
        *((program, shlex.join([py, *argv])) for program, argv in IMPORTS.items()),
    ]


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "n/a"


def tables(results: list[Series]) -> tuple[list[list[str]], list[list[str]], list[str]]:
    by = {(s.records, s.program): s for s in results if s.runs}
    rows = [
        [
            "-" if s.records is None else f"{s.records:,}",
            s.program,
            f"{s.seconds:.2f}",
            s.spread,
            f"{s.rss_mib:.0f}",
            "-" if s.server_cpu is None else f"{s.server_cpu:.2f}",
            "-" if s.settled is None else f"{s.settled:.1f}",
            s.requests or "-",
        ]
        for s in sorted(
            (s for s in results if s.runs), key=lambda s: (s.records is not None, s.records or 0)
        )
    ]
    sizes = sorted({s.records for s in results if s.records is not None and s.runs})
    imported = by.get((None, "import flows.ledger_sync"))
    ratios = []
    for records in sizes:
        floor, cold, noop = (by.get((records, p)) for p in (FLOOR, COLD, NOOP))
        ratios.append(
            [
                f"{records:,}",
                ratio(cold.seconds, floor.seconds) if cold and floor else "n/a",
                ratio(cold.seconds, noop.seconds) if cold and noop else "n/a",
                f"{noop.seconds - imported.seconds:+.2f}" if noop and imported else "n/a",
                ratio(cold.rss_mib, floor.rss_mib) if cold and floor else "n/a",
            ]
        )
    notes = []
    for program in (COLD, FLOOR):
        measured = [by[(r, program)] for r in sizes if (r, program) in by]
        if len(measured) >= 2:
            small, large = measured[0], measured[-1]
            notes.append(
                f"memory growth, {program}: {ratio(large.rss_mib, small.rss_mib)} "
                f"({small.rss_mib:.0f} MiB at {small.records:,} records -> "
                f"{large.rss_mib:.0f} MiB at {large.records:,})"
            )
        else:
            notes.append(f"memory growth, {program}: n/a (one size measured)")
    for records in sizes:
        noop = by.get((records, NOOP))
        if noop and noop.settled is not None:
            notes.append(
                f"{records:,} records: after a cold run the server stayed busy "
                f"{noop.settled:.1f} s (median) before the no-op rerun could start on a quiet "
                "server"
            )
    return rows, ratios, notes


RESULT_HEADERS = [
    "records",
    "program",
    "median s",
    "min-max s",
    "peak RSS MiB",
    "server CPU s",
    "waited s",
    "HTTP rec/rat/led",
]
LEGEND = [
    "median s, min-max s: wall time of the whole process, interpreter start to exit",
    "peak RSS MiB: the child's own ru_maxrss (os.wait4); the server and sandbox not counted",
    "server CPU s: CPU time the Prefect server's processes used while the child ran",
    "waited s: before the child started, how long the server stayed busy (waited for quiet)",
    "HTTP rec/rat/led: requests to the records, rates (+fallback) and ledger services",
]
RATIO_HEADERS = [
    "records",
    "cold / floor",
    "cold / no-op",
    "no-op - import flows.ledger_sync (s)",
    "cold RSS / floor RSS",
]


def plain_table(headers: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Columns aligned; the first `left` ones to the left, the figures to the right."""
    widths = [max(len(c) for c in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *map(line, rows)])


def report(bench: Bench, api_url: str, args: argparse.Namespace, markdown: bool) -> str:
    rows, ratios, notes = tables(bench.results)
    about, cmds = machine(), commands(api_url)
    title = (
        f"Whole-process benchmark: records {', '.join(f'{r:,}' for r in args.records)}, "
        f"repeat {args.repeat}, median of the repetitions"
    )
    settling = (
        "each run started once the server was quiet (under 10 % of a CPU for 1 s)"
        if bench.settle
        else "each run started at once, the server possibly still busy (--no-settle)"
    )
    if markdown:
        return "\n".join(
            [
                f"# {title}",
                "",
                markdown_table(RESULT_HEADERS, rows),
                "",
                *(f"- {line}" for line in [*LEGEND, settling]),
                "",
                markdown_table(RATIO_HEADERS, ratios),
                "",
                *(f"- {note}" for note in notes),
                "",
                "## Machine",
                "",
                *(f"- {name}: {value}" for name, value in about),
                "",
                "## Commands",
                "",
                *(f"- {name}: `{value}`" for name, value in cmds),
                "",
            ]
        )
    width = max(len(name) for name, _ in about + cmds)
    return "\n".join(
        [
            title,
            "",
            plain_table(RESULT_HEADERS, rows, left=2),
            *(f"  {line}" for line in [*LEGEND, settling]),
            "",
            plain_table(RATIO_HEADERS, ratios),
            "",
            *notes,
            "",
            "Machine:",
            *(f"  {name:<{width}}  {value}" for name, value in about),
            "Commands:",
            *(f"  {name:<{width}}  {value}" for name, value in cmds),
        ]
    )


# -- main -------------------------------------------------------------------------------------


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


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.whole_process",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument(
        "--records",
        type=int,
        nargs="+",
        metavar="N",
        help="record counts, one fresh sandbox each (default: 100000 1000000)",
    )
    parser.add_argument("--quick", action="store_true", help="10000 records only: a smoke run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each program (median)")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="also write the report")
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds before a child is killed"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="start each run at once, without waiting for the server to go quiet first",
    )
    args = parser.parse_args(argv)
    if args.quick and args.records:
        parser.error("--quick and --records exclude each other")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.records = sorted(set(QUICK_RECORDS if args.quick else args.records or DEFAULT_RECORDS))
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="bench-whole-process-"))
    settings = {
        "PREFECT_HOME": str(home),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    # Before anything imports prefect, whose settings are read once, at import.
    os.environ.update(settings)
    from deployments.stack import start_server

    print(f"Working directory: {home}", file=sys.stderr, flush=True)
    server = None
    failed: BaseException | None = None
    bench = Bench(home, {}, args.repeat, args.timeout, settle=not args.no_settle)
    try:
        with sigterm_as_interrupt():
            try:
                server = start_server(home)
                bench.server_pgid = server.process.pid  # start_server: a session of its own
                os.environ["PREFECT_API_URL"] = server.api_url
                bench.env = {**os.environ, **settings, "PREFECT_API_URL": server.api_url}
                bench.import_floor()
                for records in args.records:
                    bench.size(records)
            except (BenchmarkError, KeyboardInterrupt) as exc:
                failed = exc
            except Exception as exc:  # a bug or a broken stack: still report what was measured
                traceback.print_exc()
                failed = exc
            finally:
                if server is not None:
                    server.stop()
    except KeyboardInterrupt as exc:  # a second one while stopping
        failed = exc

    api_url = server.api_url if server else "<none>"
    text = report(bench, api_url, args, markdown=False)
    print(text)
    if args.markdown:
        args.markdown.write_text(report(bench, api_url, args, markdown=True))
        print(f"\nWritten to {args.markdown}")
    if failed is not None:
        what = "interrupted" if isinstance(failed, KeyboardInterrupt) else "FAILED"
        print(f"\nBenchmark {what}: {failed}", file=sys.stderr)
        print(f"Logs kept in {home}", file=sys.stderr)
        return 1
    if args.keep:
        print(f"Logs kept in {home}", file=sys.stderr)
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
