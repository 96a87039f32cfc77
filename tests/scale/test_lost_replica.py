"""An API replica lost mid-sync on the scale stack: the runs go on through the other replica
and end exact, none crashed, none run twice.

Every client talks to the load balancer (deployments/balancer.py). Replica 1 is SIGKILLed
(its machine died) while four syncs load: requests in flight to it fail and Prefect's client
retries them, the balancer takes it out of rotation, and everything after goes to replica 0.
The replica is started again afterwards (on its port) and back in rotation for the tests after.
"""

from __future__ import annotations

import os
import signal

import pytest

from deployments.scale import ScaleStack
from deployments.stack import start_sandbox_fleet, sync_parameters
from tests.helpers.ledger import assert_ledger_exact
from tests.helpers.polling import poll_until
from tests.scale.helpers import (
    LEDGER_SYNC,
    start_runs,
    states,
    wait_final,
)


def answered(stack: ScaleStack, replica: str) -> int:
    """Requests the replica answered with a 2xx, by the balancer's count."""
    return int(stack.balancer_servers()[replica]["hrsp_2xx"])


@pytest.mark.timeout(900)
def test_runs_go_on_through_the_other_replica_when_one_dies(scale_stack: ScaleStack) -> None:
    from prefect.client.orchestration import get_client

    sandboxes = start_sandbox_fleet(4, records=2000, prefix="replica")
    try:
        for sandbox in sandboxes:  # loads of about 10 s, for the replica to die during
            sandbox.set_faults("ledger", slow_rate=1.0, slow_seconds=0.5)
        parameters = {"approval_above_eur": None, "approval_above_quarantine_rate": None}
        run_ids = start_runs(
            LEDGER_SYNC, (sync_parameters("replica", n, **parameters) for n in range(4))
        )
        poll_until(
            lambda: all(s.counters()["ledger"]["applied"] >= 2 for s in sandboxes),
            300,
            1,
            "every sync loading",
        )
        assert answered(scale_stack, "api-1") > 0  # it was serving the runs
        os.killpg(scale_stack.replicas[1].process.pid, signal.SIGKILL)
        scale_stack.replicas[1].process.wait()
        poll_until(
            lambda: scale_stack.balancer_servers()["api-1"]["status"].startswith("DOWN"),
            30,
            0.5,
            "the balancer seeing replica 1 down",
        )
        before = answered(scale_stack, "api-0")
        for sandbox in sandboxes:
            sandbox.set_faults("ledger")

        runs = wait_final(run_ids, timeout=600)

        assert all(run.state.name == "Completed" for run in runs), states(runs)
        for sandbox in sandboxes:
            assert_ledger_exact(sandbox)
        with get_client(sync_client=True) as client:
            for run in runs:  # nothing was crashed or started twice on the way
                names = [state.name for state in client.read_flow_run_states(run.id)]
                assert "Crashed" not in names and run.run_count == 1, names
        assert answered(scale_stack, "api-0") > before  # the rest went through replica 0
    finally:
        for sandbox in sandboxes:
            sandbox.stop()
        scale_stack.restart_replica(1)
        poll_until(
            lambda: scale_stack.balancer_servers()["api-1"]["status"] == "UP",
            30,
            0.5,
            "replica 1 back in rotation",
        )
