"""Ledger sync: move records from a paged records API into a ledger, exactly once.

Scenario
    Records arrive from a paged records service; each valid one must land in the ledger
    converted to EUR, exactly once and to the cent, whatever fails on the way: a page that
    answers 503, a POST whose answer is lost, the process killed mid-run. Invalid records
    are quarantined with a reason, never loaded, and never fail the run on their own.

Solution
    - One page is one unit of work and one ledger batch (page size = `batch_size`). Its
      outcome (counts, quarantine reasons, batch id, next cursor; never the page itself) is a
      schema-versioned checkpoint (`toolkit.state.checkpoint`) keyed on the business key
      (upstream URLs, snapshot, cursor, size), not on a run id. A retry of this run, a
      `prefect flow-run retry` or a new run with the same parameters walks the chain of
      checkpoints without fetching completed pages again; only the first page, which opens
      the snapshot, is always fetched (the contract says it is not safe to cache).
    - Rates are checkpointed per snapshot, so a resumed sync converts with the rates it began
      with and rebuilds byte-identical batches.
    - A batch's id and Idempotency-Key derive from its content (and the state schema
      version): a POST repeated after a lost answer or a kill is a replay, never a second
      application.
    - A page's checkpoint is written in a Prefect transaction: if anything fails after the
      POST was accepted and before the checkpoint is recorded, the transaction rolls back and
      `load_batch`'s rollback hook DELETEs the batch (compensation); the flow's retry then
      applies it again, once.
    - Each run publishes a report and a table of quarantined records as artifacts, and a
      progress artifact when `max_records` bounds the run.

How to run
    make demo                                          # sandbox + local server + this flow
    python -m flows.ledger_sync batch_size=100         # against the saved block documents
    prefect deployment run ledger-sync/...             # once deployed (see README)
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from decimal import Decimal
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.utilities.annotations import opaque
from pydantic import BaseModel, Field

from flows.ledger.models import Batch, PageOutcome, Rates, RecordsPage, convert
from flows.ledger.upstreams import fetch_page, fetch_rates, load_batch
from toolkit.report import Progress, RunReport
from toolkit.services import load_service
from toolkit.state import checkpoint, step


class SyncSummary(BaseModel):
    """What a sync did, as returned by the flow and printed by `make demo`."""

    snapshot: str = ""
    pages: int = 0
    pages_resumed: int = 0
    records: int = 0
    valid: int = 0
    quarantined: int = 0
    batches_applied: int = 0
    batches_replayed: int = 0
    batches_resumed: int = 0
    batches_compensated: int = 0
    total_eur: Decimal = Decimal("0.00")

    def add(self, page: PageOutcome, resumed: bool) -> None:
        self.pages += 1
        self.pages_resumed += resumed
        self.records += page.records
        self.valid += page.valid
        self.quarantined += len(page.quarantined)
        if page.batch_id is not None:
            if resumed:
                self.batches_resumed += 1
            elif page.ledger == "replayed":
                self.batches_replayed += 1
            else:
                self.batches_applied += 1
        self.total_eur += page.total_eur

    def figures(self) -> dict[str, Any]:
        return {
            "Snapshot": self.snapshot,
            "Pages (resumed from checkpoint)": f"{self.pages} ({self.pages_resumed})",
            "Records": self.records,
            "Valid": self.valid,
            "Quarantined": self.quarantined,
            "Batches applied": self.batches_applied,
            "Batches replayed by the ledger": self.batches_replayed,
            "Batches done by an earlier run": self.batches_resumed,
            "Batches compensated": self.batches_compensated,
            "Total EUR": f"{self.total_eur}",
        }


class Upstreams:
    """The three services of a sync, loaded from block documents, with open clients."""

    def __init__(self, stack: ExitStack, records_api: str, rates_api: str, ledger_api: str):
        services = {
            "records_api": load_service("records_api", records_api),
            "rates_api": load_service("rates_api", rates_api),
            "ledger_api": load_service("ledger_api", ledger_api),
        }
        self.identity = tuple(service.base_url for service in services.values())
        self.records = stack.enter_context(services["records_api"].client())
        self.rates = stack.enter_context(services["rates_api"].client())
        self.ledger = stack.enter_context(services["ledger_api"].client())


def sync_page(
    upstreams: Upstreams,
    rates: Rates,
    snapshot: str,
    cursor: str | None,
    limit: int,
    fetched: RecordsPage | None,
    summary: SyncSummary,
) -> tuple[PageOutcome, bool]:
    """Do one page at most once: fetch, convert, load, and checkpoint, all or nothing."""
    loaded: Batch | None = None
    try:
        with checkpoint(PageOutcome, *upstreams.identity, snapshot, cursor, limit) as cp:
            if cp.value is not None:
                return cp.value, True
            page = fetched or step(fetch_page, upstreams.records, cursor, limit)
            entries, quarantined = convert(page.items, rates)
            batch = Batch.of(entries) if entries else None
            # opaque: Prefect need not walk the batch's entries looking for futures
            receipt = step(load_batch, upstreams.ledger, opaque(batch)) if batch else None
            loaded = batch
            ledger = "empty" if receipt is None else "replayed" if receipt.replayed else "applied"
            cp.save(
                PageOutcome(
                    snapshot=snapshot,
                    cursor=cursor,
                    next_cursor=page.next_cursor,
                    records=len(page.items),
                    valid=len(entries),
                    quarantined=quarantined,
                    batch_id=batch.batch_id if batch else None,
                    ledger=ledger,
                    total_eur=batch.total_eur if batch else Decimal("0.00"),
                )
            )
    except Exception:
        if loaded is not None:  # the rollback hook has DELETEd it
            summary.batches_compensated += 1
        raise
    return cp.value, False


@flow(name="ledger-sync", retries=2, retry_delay_seconds=2, persist_result=False)
def ledger_sync(
    records_api: Annotated[
        str, Field(description="HttpService block document of the records service.")
    ] = "sandbox-records",
    rates_api: Annotated[
        str, Field(description="HttpService block document of the rates service.")
    ] = "sandbox-rates",
    ledger_api: Annotated[
        str, Field(description="HttpService block document of the ledger service.")
    ] = "sandbox-ledger",
    batch_size: Annotated[
        int, Field(ge=1, le=500, description="Records per page, and so per ledger batch.")
    ] = 200,
    max_records: Annotated[
        int | None, Field(ge=1, description="Stop after this many records (all if empty).")
    ] = None,
) -> SyncSummary:
    """Sync records into the ledger in EUR, exactly once, resuming from checkpoints."""
    logger = get_run_logger()
    summary = SyncSummary()
    report = RunReport(title="Ledger sync", table_title="Quarantined records")
    progress = Progress(max_records, "Records synced") if max_records else None
    try:
        with ExitStack() as stack:
            upstreams = Upstreams(stack, records_api, rates_api, ledger_api)
            first = fetch_page(upstreams.records, None, min(batch_size, max_records or batch_size))
            summary.snapshot = first.snapshot
            with checkpoint(Rates, upstreams.identity[1], first.snapshot) as rates_cp:
                if rates_cp.value is None:
                    rates_cp.save(step(fetch_rates, upstreams.rates))
            rates = rates_cp.value
            assert rates is not None

            cursor: str | None = None
            fetched: RecordsPage | None = first
            while True:
                left = (max_records - summary.records) if max_records else batch_size
                limit = min(batch_size, left)
                outcome, resumed = sync_page(
                    upstreams, rates, first.snapshot, cursor, limit, fetched, summary
                )
                summary.add(outcome, resumed)
                report.table += [
                    {"record_id": q.record_id, "reason": q.reason, "page": summary.pages}
                    for q in outcome.quarantined
                ]
                if progress:
                    progress.update(summary.records)
                logger.info(
                    "Page %d %s: %d records, %d quarantined, batch %s",
                    summary.pages,
                    "resumed from checkpoint" if resumed else outcome.ledger,
                    outcome.records,
                    len(outcome.quarantined),
                    outcome.batch_id,
                )
                cursor, fetched = outcome.next_cursor, None
                if cursor is None or (max_records and summary.records >= max_records):
                    break
        report.status = "completed"
    except BaseException as exc:
        report.status = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        if summary.batches_compensated:
            report.notes.append(
                f"{summary.batches_compensated} batch(es) were compensated (DELETE) after their "
                "checkpoint failed; a retry applies them again."
            )
        report.figures = summary.figures()
        report.publish("ledger-sync")
    return summary


def main(argv: list[str]) -> int:
    """`python -m flows.ledger_sync [name=value ...]`: run once and print the summary."""
    from prefect.settings import PREFECT_UI_URL

    parameters: dict[str, Any] = {}
    for arg in argv:
        name, _, value = arg.partition("=")
        parameters[name] = value
    state = ledger_sync(**parameters, return_state=True)
    print()
    if state.is_completed():
        summary: SyncSummary = state.result()
        for label, value in summary.figures().items():
            print(f"{label + ':':<34}{value}")
    else:
        print(f"The run ended {state.name}: {state.message}", file=sys.stderr)
    print(
        f"{'Flow run:':<34}{PREFECT_UI_URL.value()}/runs/flow-run/{state.state_details.flow_run_id}"
    )
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
