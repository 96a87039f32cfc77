"""Ledger syncs in tests: in this process or as a killable process, and the exactness check.

Every claim about the ledger is counted at the sandbox: `assert_ledger_exact` compares what it
holds with what its current data set expects, record by record.
"""

from __future__ import annotations

import contextvars
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sandbox.server import Sandbox
from sandbox.verify import check_ledger
from tests.helpers import ROOT
from tests.helpers.polling import poll_until


def assert_ledger_exact(
    sandbox: Sandbox, expected: dict[str, Decimal] | None = None, *, applied_once: bool = True
) -> None:
    """Every valid record of the current data set (or of `expected`) held once, to the cent,
    nothing else; with `applied_once`, no record was ever applied twice (not even applied,
    reversed, applied again)."""
    wanted = sandbox.dataset.expected_entries() if expected is None else expected
    check = check_ledger(wanted, sandbox.ledger_state())
    assert check.exact, str(check)
    if applied_once:
        assert check.applied_ever_twice == [], check.applied_ever_twice[:10]


def run_sync(**parameters: Any) -> Any:
    """ledger_sync in this process (pages of 100 unless told); its final state."""
    from flows.ledger_sync import ledger_sync

    return ledger_sync(**{"batch_size": 100, **parameters}, return_state=True)


def paused_run(**parameters: Any) -> tuple[threading.Thread, dict[str, Any], Any]:
    """Start a sync that will pause in a thread; return (thread, result holder, run id)."""
    from prefect.client.orchestration import get_client

    def paused():
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(limit=5, sort="START_TIME_DESC")
        return next((run for run in runs if run.state and run.state.is_paused()), None)

    holder: dict = {}
    context = contextvars.copy_context()  # this test's settings (result storage) go along
    thread = threading.Thread(
        target=lambda: context.run(lambda: holder.setdefault("state", run_sync(**parameters)))
    )
    thread.start()
    run = poll_until(paused, timeout=60, interval=0.3, what="the run pausing")
    return thread, holder, run.id


def start_sync_process(*arguments: str) -> subprocess.Popen[bytes]:
    """`python -m flows.ledger_sync` in a process group of its own, like a deployment run, with
    this test's server, storage and ledger index (the environment)."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.ledger_sync", *(arguments or ("batch_size=100",))],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_when(process: subprocess.Popen[bytes], ready: Callable[[], bool], after: float) -> None:
    """SIGKILL the process group `after` seconds once `ready()` holds."""
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert process.poll() is None, "the flow ended before it could be killed"
            assert time.monotonic() < deadline, "the flow made no progress"
            time.sleep(0.01)
        time.sleep(after)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def page_fetches(sandbox: Sandbox) -> dict[str, int]:
    """How often each cursor was fetched ('' is the first page, which opens a snapshot)."""
    return dict(sandbox.counters()["records"]["page_fetches"])


def refetched(before: dict[str, int], after: dict[str, int]) -> set[str]:
    """Cursors fetched by an earlier run and again by a later one."""
    return set(before) & set(after)
