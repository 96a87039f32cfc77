"""ledger_sync deployed on the scale profile's stack: many ledgers in parallel over three
workers and two API replicas behind a load balancer, one ledger never loaded twice at once,
every ledger exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.scale import ScaleStack
from deployments.stack import start_sandbox_fleet, sync_parameters
from tests.helpers.ledger import assert_ledger_exact
from tests.scale.helpers import (
    LEDGER_SYNC,
    most_at_once,
    start_runs,
    states,
    stored_objects,
    wait_final,
)
from toolkit.config import settings


@pytest.mark.timeout(1500)  # the stack's start (about a minute) and 60 runs
def test_sixty_syncs_of_distinct_ledgers_over_three_workers(scale_stack: ScaleStack) -> None:
    sandboxes = start_sandbox_fleet(60, records=300, prefix="many")
    pages_before = {key for key in stored_objects() if key.startswith("results/walk-page/")}
    try:
        run_ids = start_runs(LEDGER_SYNC, (sync_parameters("many", n) for n in range(60)))
        runs = wait_final(run_ids, timeout=1200)
        assert all(run.state.name == "Completed" for run in runs), states(runs)
        for sandbox in sandboxes:
            assert_ledger_exact(sandbox)
        # Syncs of different ledgers overlap: nothing serializes the deployment as a whole.
        assert most_at_once(runs) > 1
        # Every worker took runs, and both replicas answered them (through the balancer).
        logs = [worker.log.read_text() for worker in scale_stack.workers]
        for worker, log in zip(scale_stack.workers, logs, strict=True):
            assert any(str(run_id) in log for run_id in run_ids), f"{worker.name} ran none"
        answered = {
            name: int(row["hrsp_2xx"]) for name, row in scale_stack.balancer_servers().items()
        }
        assert len(answered) == 2 and all(answered.values()), answered
        # Checkpoints went to the shared object store, not to a worker's disk, and each
        # finished sync deleted its walk's pages from it, keeping its state.
        stored = stored_objects()
        assert sum(key.startswith("results/sync/") for key in stored) >= 60, sorted(stored)[:20]
        pages = {key for key in stored if key.startswith("results/walk-page/")}
        assert not pages - pages_before  # the session's other syncs' are not this test's
    finally:
        for sandbox in sandboxes:
            sandbox.stop()


@pytest.mark.timeout(900)
def test_two_syncs_of_one_ledger_at_once_load_it_once(
    scale_stack: ScaleStack, tmp_path: Path
) -> None:
    (sandbox,) = start_sandbox_fleet(1, records=1000, prefix="same")
    try:
        sandbox.set_faults("ledger", slow_rate=1.0, slow_seconds=0.3)  # long loads, to overlap
        run_ids = start_runs(LEDGER_SYNC, [sync_parameters("same", 0)] * 2)
        runs = wait_final(run_ids, timeout=600)
        assert all(run.state.name == "Completed" for run in runs), states(runs)
        assert most_at_once(runs) == 2  # both ran at once: no deployment-wide limit queued one
        # Their loads never did: at most one sync's POSTs in flight at any moment.
        in_flight = sandbox.counters()["ledger"]["max_in_flight"]
        assert in_flight <= settings().ledger_posts_in_flight, in_flight
        assert_ledger_exact(sandbox)  # and nothing was applied twice
    finally:
        sandbox.stop()
