"""flows/fan_out.py: batches loaded side by side, bounded, and none lost to another's failure.

Counted at the sandbox: how many ledger requests were in flight at once, how many POSTs each
batch took, what the ledger holds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any
from uuid import UUID

import httpx
import pytest

from sandbox.dataset import RATES, RATES_AS_OF
from sandbox.server import Sandbox
from sandbox.verify import check_ledger
from tests.helpers.ledger import assert_ledger_exact

pytestmark = pytest.mark.usefixtures("sandbox_blocks")

BATCHES = 10  # 1000 sandbox records at batch_size=100, every page with valid records
# A POST the sandbox holds back 3 s takes at least SLOW; a prompt one, with ten task runs
# starting at once on a loaded 2-core machine, was seen taking up to 1.7 s.
SLOW = timedelta(seconds=2.5)
WAKE_UP = timedelta(seconds=0.5)  # from a task run's end to its future's waiter waking


def run(**parameters: Any):
    """The final state of one run (returned, not raised, so a Failed run can be inspected)."""
    from flows.fan_out import fan_out_load

    return fan_out_load(**{"batch_size": 100, **parameters}, return_state=True)


def page_batch(sandbox: Sandbox, page: int, batch_size: int = 100):
    """The batch the flow builds for page `page` (1-based) of the sandbox's data set."""
    from flows.ledger.models import Batch, Rates, convert

    items = sandbox.dataset.records[(page - 1) * batch_size : page * batch_size]
    rates = Rates(base="EUR", as_of=RATES_AS_OF, rates=RATES)
    return Batch.of(convert(items, rates).entries)


def load_times(flow_run_id: UUID) -> dict[str, tuple[datetime, datetime]]:
    """When each load-batch task run started and ended, by batch id, as the server recorded."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {
        run.name.removeprefix("load-batch-"): (run.start_time, run.end_time)
        for run in task_runs
        if run.name.startswith("load-batch-") and run.start_time and run.end_time
    }


def test_every_batch_loads_and_the_ledger_is_exact(sandbox: Sandbox) -> None:
    state = run()

    assert state.is_completed(), state.message
    result = state.result()
    assert_ledger_exact(sandbox)
    assert (result.loaded, result.replayed, result.failed) == (BATCHES, 0, 0)
    assert (result.records, result.quarantined) == (1000, 50)
    assert result.total_eur == sandbox.dataset.expected_total_eur()
    assert sandbox.counters()["ledger"]["post_attempts"] == BATCHES


def test_a_second_run_replays_every_batch(sandbox: Sandbox) -> None:
    assert run().is_completed()

    result = run().result()

    assert (result.loaded, result.replayed) == (0, BATCHES)
    assert_ledger_exact(sandbox)


def test_concurrency_at_the_ledger_is_bounded_by_max_in_flight(sandbox: Sandbox) -> None:
    sandbox.set_faults("ledger", slow_rate=1.0, slow_seconds=0.2)

    state = run(max_in_flight=3)

    assert state.is_completed(), state.message
    # More than one proves the fan-out, no more than three proves the bound.
    assert sandbox.counters()["ledger"]["max_in_flight"] == 3


def test_one_failed_batch_does_not_lose_the_others(sandbox: Sandbox) -> None:
    doomed = page_batch(sandbox, 4)
    # The same batch id held under another Idempotency-Key: the ledger answers 409 (permanent)
    # to the flow's POST of page 4, and to nothing else.
    decoy = {
        "batch_id": doomed.batch_id,
        "entries": [{"record_id": "decoy-1", "account": "acc-1", "amount_eur": "0.01"}],
    }
    answer = httpx.post(
        sandbox.urls["ledger"] + "/ledger/batches",
        json=decoy,
        headers={"Idempotency-Key": "someone-else"},
    )
    assert answer.status_code == 201

    state = run()

    assert state.is_failed()
    assert doomed.batch_id in state.message
    result = state.result(raise_on_failure=False)
    assert (result.loaded, result.failed) == (BATCHES - 1, 1)
    assert list(result.failures) == [doomed.batch_id]
    assert result.failures[doomed.batch_id].startswith("HTTP 409")
    assert result.total_eur == sandbox.dataset.expected_total_eur() - doomed.total_eur
    check = check_ledger(sandbox.dataset.expected_entries(), sandbox.ledger_state())
    assert check.missing == sorted(entry.record_id for entry in doomed.entries)
    assert check.unexpected == ["decoy-1"] and not check.applied_twice
    ledger = sandbox.counters()["ledger"]
    # Every batch was posted once, the doomed one included (409 is not retried), plus the decoy.
    assert ledger["post_attempts"] == BATCHES + 1
    assert (ledger["applied"], ledger["conflicts"]) == (BATCHES - 1 + 1, 1)


def test_results_are_consumed_as_they_complete(sandbox: Sandbox) -> None:
    # Every batch in flight at once; about half the POSTs answer 3 s late.
    sandbox.set_faults("ledger", slow_rate=0.5, slow_seconds=3.0)

    state = run(max_in_flight=16)

    assert state.is_completed(), state.message
    result = state.result()
    assert sorted(outcome.page for outcome in result.batches) == list(range(1, BATCHES + 1))
    times = load_times(state.state_details.flow_run_id)
    slow = {batch_id for batch_id, (start, end) in times.items() if end - start >= SLOW}
    assert 0 < len(slow) < BATCHES, times
    # In the order consumed, no batch ended clearly before the one consumed ahead of it. (Not
    # "every fast one first": on a loaded machine a fast batch submitted late can end after a
    # slow one submitted early; what matters is the order they ended in.)
    ends = [times[outcome.batch_id][1] for outcome in result.batches]
    assert all(later >= earlier - WAKE_UP for earlier, later in pairwise(ends)), ends
    # ...which page (submission) order would not give: a slow page precedes a fast one.
    by_page = sorted(result.batches, key=lambda outcome: outcome.page)
    pages_order = ["slow" if outcome.batch_id in slow else "fast" for outcome in by_page]
    assert pages_order != sorted(pages_order), pages_order


def test_on_a_dask_cluster_the_same_flow_loads_every_batch_bounded_and_stored(
    sandbox: Sandbox, result_storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scale profile's runner, selected by a setting only: a local Dask cluster whose
    worker is a process of its own; the bound and the exactness hold, receipts are stored."""
    from prefect.client.orchestration import get_client

    monkeypatch.setenv("RESILIENT_FLOWS_TASK_RUNNER", "dask")
    sandbox.set_faults("ledger", slow_rate=1.0, slow_seconds=0.2)

    state = run(max_in_flight=3)

    assert state.is_completed(), state.message
    assert_ledger_exact(sandbox)
    assert sandbox.counters()["ledger"]["max_in_flight"] == 3
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    loads = [r for r in runs if r.name.startswith("load-batch-")]
    assert len(loads) == BATCHES
    for load in loads:  # each receipt persisted in the run's result storage
        batch_id = load.name.removeprefix("load-batch-")
        assert load.state.is_completed()
        assert (result_storage / "fan-out" / f"{batch_id}.json").is_file()
