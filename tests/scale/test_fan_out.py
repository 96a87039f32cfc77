"""The fan-out flow deployed on the scale stack: its tasks on a Dask cluster (the scale
profile's RESILIENT_FLOWS_TASK_RUNNER; no flow file differs), the ledger exact, the bound
kept, every batch's receipt in the object store."""

from __future__ import annotations

import pytest

from deployments.scale import ScaleStack
from deployments.stack import start_sandbox_fleet
from tests.helpers.ledger import assert_ledger_exact
from tests.scale.helpers import start_runs, states, stored_objects, wait_final


@pytest.mark.timeout(600)
def test_fan_out_runs_its_tasks_on_dask_with_receipts_in_the_object_store(
    scale_stack: ScaleStack,
) -> None:
    assert scale_stack.settings["RESILIENT_FLOWS_TASK_RUNNER"] == "dask"
    (sandbox,) = start_sandbox_fleet(1, records=1000, prefix="fan")
    try:
        sandbox.set_faults("ledger", slow_rate=1.0, slow_seconds=0.2)
        parameters = {
            "records_api": "fan-records-0",
            "rates_api": "fan-rates",
            "ledger_api": "fan-ledger-0",
            "max_in_flight": 3,
        }
        runs = wait_final(start_runs("fan-out-load/fan-out-load", [parameters]), timeout=400)

        assert runs[0].state.name == "Completed", states(runs)
        assert_ledger_exact(sandbox)
        assert sandbox.counters()["ledger"]["max_in_flight"] == 3
        receipts = [key for key in stored_objects() if key.startswith("results/fan-out/")]
        assert len(receipts) == 10, receipts  # one per batch of 100 records
        # prefect-dask logs the cluster it starts, in the flow run's log (the worker's file).
        log = "".join(worker.log.read_text() for worker in scale_stack.workers)
        assert "LocalCluster" in log
    finally:
        sandbox.stop()
