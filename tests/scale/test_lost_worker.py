"""A worker machine lost mid-sync on the scale stack: its runs are found dead, run again by
the live workers from the shared checkpoints, and every ledger ends exact, with no manual step.

The "machine" is one of the stack's three workers and every flow-run process it started, all
SIGKILLed while their syncs load. Nothing of theirs reports the end: the heartbeat automation
marks the runs Crashed, rerun-crashed schedules them again
(deployments/crash_detection.py), and the workers left take them. A re-run must go on with
its sync: it opens no new snapshot and posts only the batches that were not yet applied. The
detection finds each within 150 s of the kill (heartbeats every 30 s, 90 s of silence).
The killed worker is started again afterwards (a replacement machine) for the tests after.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from deployments.crash_detection import CRASH_MESSAGE
from deployments.scale import ScaleStack
from deployments.stack import start_sandbox_fleet, sync_parameters
from flows.rerun_crashed import RERUN_MESSAGE
from tests.helpers.ledger import assert_ledger_exact, page_fetches
from tests.helpers.polling import poll_until
from tests.helpers.processes import alive, descendants, kill_machine
from tests.scale.helpers import (
    LEDGER_SYNC,
    start_runs,
    states,
    wait_final,
)
from toolkit.config import settings

KILL_TO_CRASHED = timedelta(seconds=150)
SYNCS = 6
RECORDS = 3000
BATCHES = RECORDS // 100  # pages of 100, one ledger batch each
IN_FLIGHT = settings().ledger_posts_in_flight  # the workers' syncs have the same settings


def flow_runs_under(pid: int) -> dict[UUID, int]:
    """The flow runs a worker's process `pid` started: run id -> flow-run process id."""
    found = {}
    for child in descendants(pid):
        try:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for variable in environ:
            if variable.startswith(b"PREFECT__FLOW_RUN_ID="):
                found.setdefault(UUID(variable.split(b"=", 1)[1].decode()), child)
    return found


def state_history(run_id: UUID) -> list[tuple[str, str | None]]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [(s.name, s.message) for s in client.read_flow_run_states(run_id)]


def crashed_at(run_id: UUID) -> datetime:
    """When the detection marked the run Crashed (its first Crashed state)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(run_id)
    return min(s.timestamp for s in states if s.name == "Crashed" and s.message == CRASH_MESSAGE)


@pytest.mark.timeout(900)
def test_runs_of_a_killed_worker_are_run_again_and_end_exact(scale_stack: ScaleStack) -> None:
    sandboxes = start_sandbox_fleet(SYNCS, records=RECORDS, prefix="lost")
    victim = None
    try:
        for sandbox in sandboxes:  # loads of about 15 s, to be killed in the middle of
            sandbox.set_faults("ledger", slow_rate=1.0, slow_seconds=0.5 * IN_FLIGHT)
        parameters = {"approval_above_eur": None, "approval_above_quarantine_rate": None}
        run_ids = start_runs(
            LEDGER_SYNC, (sync_parameters("lost", n, **parameters) for n in range(SYNCS))
        )
        by_run = dict(zip(run_ids, sandboxes, strict=True))
        poll_until(
            lambda: all(s.counters()["ledger"]["applied"] >= 2 for s in sandboxes),
            300,
            1,
            "every sync loading",
        )
        # The machine to lose: the worker running the most of these syncs.
        under = {n: flow_runs_under(w.process.pid) for n, w in enumerate(scale_stack.workers)}
        victim = max(under, key=lambda n: len(set(under[n]) & set(run_ids)))
        lost = sorted(set(under[victim]) & set(run_ids))
        assert lost, under
        worker = scale_stack.workers[victim]
        processes = [worker.process.pid, *descendants(worker.process.pid)]
        kill_machine(processes)
        killed_at = datetime.now(UTC)
        worker.process.wait(timeout=10)
        poll_until(lambda: not any(alive(pid) for pid in processes), 10, 0.5, "the machine's end")
        applied_at_kill = {run: by_run[run].counters()["ledger"]["applied"] for run in lost}
        assert all(applied < BATCHES for applied in applied_at_kill.values()), applied_at_kill
        for sandbox in sandboxes:
            sandbox.set_faults("ledger")
            sandbox.reset_counters()

        runs = wait_final(run_ids, timeout=600, past_crashes=True)

        assert all(run.state.name == "Completed" for run in runs), states(runs)
        for sandbox in sandboxes:
            assert_ledger_exact(sandbox)  # every record once, nothing applied twice
        for run in (r for r in runs if r.id in lost):
            history = state_history(run.id)
            assert ("Crashed", CRASH_MESSAGE) in history, history  # found by the automation
            found_after = crashed_at(run.id) - killed_at  # heartbeat every 30 s, silence 90 s
            assert found_after <= KILL_TO_CRASHED, found_after
            assert ("AwaitingRetry", RERUN_MESSAGE) in history, history  # and run again
            assert run.run_count >= 2
            # It went on with its sync: no new snapshot, only the batches not yet applied.
            sandbox = by_run[run.id]
            assert "" not in page_fetches(sandbox)
            applied_since = sandbox.counters()["ledger"]["applied"]
            assert applied_since <= BATCHES - applied_at_kill[run.id] + IN_FLIGHT, applied_since
        # The live workers took the re-runs.
        live_logs = [w.log.read_text() for n, w in enumerate(scale_stack.workers) if n != victim]
        assert all(any(str(run) in log for log in live_logs) for run in lost)
    finally:
        for sandbox in sandboxes:
            sandbox.stop()
        if victim is not None:
            scale_stack.workers[victim] = scale_stack.start_worker(victim)
