"""The local stack (`python -m deployments up`) as a subprocess, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

from tests.helpers import ROOT


def answers(url: str) -> bool:
    """Whether a server answers at `url`, with any status (a stopped one does not)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def start_up(
    home: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], list[str]]:
    """Start `python -m deployments up` in `home` (without the caller's PREFECT_* settings,
    plus `extra_env`); the process and its output up to its `UI: ...` line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(extra_env or {})
    env["PWD"] = str(ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "deployments", "up", "--home", str(home), "--records", "200"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if line.startswith("UI: "):
            return process, lines
    process.kill()
    raise AssertionError("no UI line:\n" + "".join(lines[-40:]))


def drain(process: subprocess.Popen[str], keep: int = 200) -> deque[str]:
    """Keep reading the stack's output in a thread, so that a full pipe never blocks it; the
    last `keep` lines, for failure messages."""
    tail: deque[str] = deque(maxlen=keep)

    def read() -> None:
        for line in process.stdout:
            tail.append(line)

    threading.Thread(target=read, name="stack-output", daemon=True).start()
    return tail


def stop(process: subprocess.Popen[str]) -> int:
    """Ctrl-C the stack; its exit code."""
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=90)


@contextmanager
def own_server(home: Path) -> Iterator[str]:
    """A Prefect server of a test module's own, state in `home`: its API URL, which the
    in-process client uses meanwhile."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.stack import start_server

    started = start_server(home)
    try:
        with temporary_settings({PREFECT_API_URL: started.api_url}):
            yield started.api_url
    finally:
        started.stop()


def deploy(env: dict[str, str], *names: str) -> str:
    """`python -m deployments deploy [NAME ...]` with `env`; its standard output (it must pass)."""
    result = subprocess.run(
        [sys.executable, "-m", "deployments", "deploy", *names],
        env={**env, "PWD": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def wait_final_approving(run_id: UUID, approval: dict[str, Any], timeout: float) -> Any:
    """The flow run once final; a run paused for approval is resumed with `approval` on the
    way (as a person would answer its form)."""
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            if run.state.is_paused():
                resume_flow_run(run_id, run_input=approval)
            elif run.state.is_final():
                return run
            time.sleep(1)
    raise AssertionError(f"run {run_id} still {run.state.name} after {timeout} s")
