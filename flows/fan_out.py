"""Fan-out / fan-in: load the batches of a sync side by side, a bounded number at a time.

Scenario
    Loading one batch after another leaves the ledger idle while each POST travels and the
    flow waits; a slow ledger makes a sync as slow as the sum of its answers. Sending every
    batch at once would swamp the ledger instead. And when one batch fails for good (a 409,
    a 422), the batches that did load must stay loaded and be reported, not lost behind the
    first exception.

Solution
    The page chain is walked one page at a time (each cursor comes from the page before),
    rates are resolved once for the snapshot (flows/ledger/rates.py) and every page is
    converted in memory. Then one `load_batch` task per batch is submitted to the task
    runner the settings select (toolkit/task_runners.py): threads of the flow-run process by
    default, a Dask cluster with RESILIENT_FLOWS_TASK_RUNNER=dask (prefect-dask; a local
    cluster, or the scheduler at RESILIENT_FLOWS_DASK_ADDRESS), with no change here. The
    bound holds on either: the flow keeps at most `max_in_flight` batches submitted and
    unfinished, and submits the next one as one finishes, so no more than `max_in_flight`
    POSTs are ever in flight. A task gets the ledger block's name, not a client, so that its
    arguments can be sent to another process; its receipt is persisted in result storage
    (object storage when the workers are on many machines). A global concurrency limit would
    be the tool to share one bound among several runs; here one run has it. Batches go in as
    they are: `opaque(batch)`, which would spare Prefect walking their entries for futures,
    reaches a Dask worker still wrapped (prefect-dask 0.3.7 does not unwrap it).
    Results are consumed with `prefect.futures.as_completed`, in the order the ledger
    answers: each batch's outcome (loaded, replayed, or failed with its error) goes into a
    `FanOutResult`. The run ends Completed when every batch is in the ledger; otherwise it
    returns a Failed state that names the failed batches and still carries the result. The
    loaded batches stay loaded: a rerun posts them again under the same Idempotency-Key and
    the ledger replays them, applying nothing twice.

How to run
    python -m flows.fan_out max_in_flight=8 batch_size=100   # against the saved blocks
    RESILIENT_FLOWS_TASK_RUNNER=dask python -m flows.fan_out # the same, on a local Dask cluster
"""

from __future__ import annotations

import sys
from datetime import timedelta
from decimal import Decimal
from itertools import islice
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.cache_policies import INPUTS
from prefect.futures import PrefectFuture, as_completed
from prefect.states import Failed, State
from pydantic import BaseModel, Field

from flows.ledger.models import Batch, LedgerReceipt, convert
from flows.ledger.parameters import BatchSize, RatesAgeHours
from flows.ledger.rates import resolve_rates, stored_rates_age
from flows.ledger.upstreams import Upstreams, iter_pages, load_batch, open_upstreams
from toolkit.cli import parse_parameters
from toolkit.retry import describe_failure
from toolkit.task_runners import fan_out_runner

PERSISTED_LOAD = load_batch.with_options(
    persist_result=True,
    result_storage_key="fan-out/{parameters[batch].batch_id}.json",
    # Prefect 3.9.1 wrote no result of this task with NO_CACHE (seen in the tests), so:
    # refresh_cache runs it every time all the same: a rerun POSTs again, the ledger replays.
    cache_policy=INPUTS,
    refresh_cache=True,
)
"""`load_batch`, its receipt kept in result storage under the batch's id (its content's hash):
object storage, when workers are on many machines."""


class BatchOutcome(BaseModel):
    """What became of one batch: in the ledger (now or before), or not, and why."""

    batch_id: str
    page: int  # 1-based position in the page chain: submission order, not completion order
    entries: int
    total_eur: Decimal
    status: Literal["loaded", "replayed", "failed"]
    error: str | None = None


class FanOutResult(BaseModel):
    """What a fan-out load did, as returned by the flow (also inside its Failed state)."""

    snapshot: str = ""
    rates_source: str = ""
    pages: int = 0
    records: int = 0
    quarantined: int = 0
    skipped: int = 0
    loaded: int = 0
    replayed: int = 0
    failed: int = 0
    total_eur: Decimal = Decimal("0.00")  # of the batches now in the ledger
    failures: dict[str, str] = Field(default_factory=dict)  # batch id -> error
    batches: list[BatchOutcome] = Field(default_factory=list)  # in completion order

    def add(self, outcome: BatchOutcome) -> None:
        self.batches.append(outcome)
        if outcome.status == "failed":
            self.failed += 1
            self.failures[outcome.batch_id] = outcome.error or "unknown error"
            return
        self.loaded += outcome.status == "loaded"
        self.replayed += outcome.status == "replayed"
        self.total_eur += outcome.total_eur


def outcome_of(future: PrefectFuture[LedgerReceipt], page: int, batch: Batch) -> BatchOutcome:
    """The outcome of a finished load; a failed one keeps its error instead of raising it."""
    answer = future.result(raise_on_failure=False)
    fields: dict[str, Any] = {
        "batch_id": batch.batch_id,
        "page": page,
        "entries": len(batch.entries),
        "total_eur": batch.total_eur,
    }
    if isinstance(answer, LedgerReceipt):
        return BatchOutcome(**fields, status="replayed" if answer.replayed else "loaded")
    error = (
        describe_failure(answer) if isinstance(answer, BaseException) else f"{future.state.message}"
    )
    return BatchOutcome(**fields, status="failed", error=error)


@flow(name="fan-out-load", persist_result=False)
def fan_out_load(
    records_api: str = "sandbox-records",
    rates_api: str = "sandbox-rates",
    ledger_api: str = "sandbox-ledger",
    batch_size: BatchSize = 100,
    max_in_flight: Annotated[int, Field(ge=1, le=32)] = 4,
    max_rates_age_hours: RatesAgeHours = None,
) -> FanOutResult | State:
    """Load every page of the records service into the ledger, `max_in_flight` at a time.

    Args:
      records_api: Name of the HttpService block document of the records service to read.

      rates_api: Name of the HttpService block document of the primary rates service; if it
        does not answer, rates stored by an earlier run may stand in.

      ledger_api: Name of the HttpService block document of the ledger service to load into.

      batch_size: Records per page, and so per ledger batch, from 1 to 500.

      max_in_flight: Most ledger batches loading at the same time, from 1 to 32.

      max_rates_age_hours: Hours; when the rates service does not answer, rates stored by an
        earlier run may stand in if they are younger than this; empty: the setting
        RESILIENT_FLOWS_MAX_RATES_AGE_HOURS (24 unless set).
    """
    result = FanOutResult()
    with open_upstreams(
        records_api=records_api, rates_api=rates_api, ledger_api=ledger_api
    ) as upstreams:
        batches = plan_batches(upstreams, batch_size, stored_rates_age(max_rates_age_hours), result)
    # Threads or a Dask cluster, as the settings say; never more than max_in_flight submitted
    # and unfinished. An exception escaping the block makes the runner cancel what is left.
    with fan_out_runner(max_in_flight) as runner:
        waiting = iter(batches)
        loading: dict[PrefectFuture[LedgerReceipt], tuple[int, Batch]] = {}
        while True:
            for number, batch in islice(waiting, max_in_flight - len(loading)):
                load = {"ledger_api": ledger_api, "batch": batch}
                loading[runner.submit(PERSISTED_LOAD, load)] = (number, batch)
            if not loading:
                break
            future = next(as_completed(list(loading)))  # the first of them to finish
            done = len(result.batches) + 1
            record(result, outcome_of(future, *loading.pop(future)), done, len(batches))
    if not result.failures:
        return result
    failed = "; ".join(f"{batch_id} ({error})" for batch_id, error in result.failures.items())
    # The loaded batches are not undone: a rerun replays them under their Idempotency-Key.
    message = (
        f"{result.failed} of {len(batches)} batches failed: {failed}. "
        f"{result.loaded + result.replayed} are in the ledger; a rerun replays them safely."
    )
    return Failed(message=message, data=result)


def plan_batches(
    upstreams: Upstreams, batch_size: int, max_rates_age: timedelta, result: FanOutResult
) -> list[tuple[int, Batch]]:
    """Every page of the snapshot, converted: (page number, batch) for each page that has
    something to load; the counts go into `result`."""
    pages = list(iter_pages(upstreams.records, batch_size))
    result.snapshot = pages[0].snapshot
    rates = resolve_rates(upstreams.rates_sources, result.snapshot, max_rates_age)
    result.rates_source = rates.source
    batches: list[tuple[int, Batch]] = []
    for number, page in enumerate(pages, start=1):
        converted = convert(page.items, rates)
        result.pages += 1
        result.records += len(page.items)
        result.quarantined += len(converted.quarantined)
        result.skipped += len(converted.skipped)
        if converted.entries:  # a page of invalid records only has nothing to load
            batches.append((number, Batch.of(converted.entries)))
    return batches


def record(result: FanOutResult, outcome: BatchOutcome, done: int, of: int) -> None:
    """Count a batch's outcome as it completes, and say so."""
    result.add(outcome)
    get_run_logger().info(
        "Batch %s (page %d) %s%s [%d/%d]",
        outcome.batch_id,
        outcome.page,
        outcome.status,
        f": {outcome.error}" if outcome.error else "",
        done,
        of,
    )


def main(argv: list[str]) -> int:
    """`python -m flows.fan_out [name=value ...]`: run once and print the outcome."""
    state = fan_out_load(**parse_parameters(argv), return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, FanOutResult):
        print(result.model_dump_json(indent=2, exclude={"batches"}))
    if not state.is_completed():
        print(f"The run ended {state.name}: {state.message}", file=sys.stderr)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
