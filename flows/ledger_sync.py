"""Ledger sync: move records from a paged records API into a ledger, exactly once.

Scenario
    Records arrive from a paged records service; each valid one must land in the ledger
    converted to EUR, exactly once and to the cent, whatever fails on the way: a page that
    answers 503, a POST whose answer is lost, the rates service down, the process killed
    mid-run. Invalid records are quarantined with a reason, never loaded, and never fail the
    run on their own. Unusual syncs wait for a person; partial ones say so loudly.

Solution
    1. Plan. Fetch the first page (it opens the snapshot, so it is always fetched), resolve
       the snapshot's rates (primary, fallback, recent stored ones: flows/ledger/rates.py),
       then walk the page chain: a page whose checkpoint exists is done and not fetched
       again; any other page is fetched and converted in memory. A page answering 404 ends
       the walk (its records and those after it are lost); a record whose currency has no
       rate is skipped. Nothing is loaded yet.
    2. Decide. If what would be lost is above `max_loss_fraction`, the run fails having
       loaded nothing. If the EUR total to load or the quarantine rate is above the approval
       thresholds, the run pauses for a person (toolkit.approval); a refusal stops it
       cleanly, having loaded nothing.
    3. Load. Each planned page is one ledger batch and one schema-versioned checkpoint
       (toolkit.state.checkpoint) keyed on the business key (upstream URLs, snapshot,
       cursor, size), never on a run id. The batch's id and Idempotency-Key derive from its
       content, so a POST repeated after a lost answer or a kill is a replay. If the
       checkpoint cannot be recorded after the POST was accepted, the transaction rolls back
       and `load_batch`'s rollback hook DELETEs the batch; the flow retry applies it again.
    4. Report. A markdown report, a table of quarantined and skipped records, a progress
       artifact while loading; a partial run ends in the state `Degraded`, emits an event and
       alerts. Every sync that ends Completed or Degraded publishes `COMPLETED_EVENT`, to
       which other deployments subscribe (flows/reconcile.py). Permanent errors (a 400, a
       bad parameter) end the run at once; transient ones get Prefect's flow retries, which
       resume from the checkpoints.

How to run
    make demo                                          # sandbox + local server + this flow
    python -m flows.ledger_sync batch_size=100         # against the saved block documents
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

import httpx
from prefect import flow, get_run_logger
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.states import Cancelled, State
from prefect.utilities.annotations import opaque
from pydantic import BaseModel, Field

from flows.ledger.models import Batch, Converted, PageOutcome, Rates, RecordsPage, convert
from flows.ledger.parameters import BatchSize, EurAmount, LedgerApi, RatesApi, RecordsApi
from flows.ledger.rates import RatesSource, resolve_rates
from flows.ledger.upstreams import fetch_page, load_batch
from toolkit import degradation
from toolkit.approval import TimeoutPolicy, request_approval
from toolkit.report import Progress, RunReport
from toolkit.retry import end_run_unless_transient
from toolkit.services import load_service
from toolkit.state import checkpoint, lookup, step

COMPLETED_EVENT = "resilient-flows.ledger-sync.completed"
"""Published when a sync ends Completed or Degraded; subscribers: see flows/reconcile.py."""


class SyncSummary(BaseModel):
    """What a sync did, as returned by the flow and printed by `make demo`."""

    snapshot: str = ""
    rates_source: str = ""
    pages: int = 0
    pages_resumed: int = 0
    records: int = 0
    valid: int = 0
    quarantined: int = 0
    skipped: int = 0
    pages_lost: int = 0
    records_lost_at_least: int = 0
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
        self.skipped += len(page.skipped)
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
            "Rates from": self.rates_source,
            "Pages (resumed from checkpoint)": f"{self.pages} ({self.pages_resumed})",
            "Records": self.records,
            "Valid": self.valid,
            "Quarantined": self.quarantined,
            "Skipped (no rate)": self.skipped,
            "Pages lost (404), records lost at least": (
                f"{self.pages_lost}, {self.records_lost_at_least}"
            ),
            "Batches applied": self.batches_applied,
            "Batches replayed by the ledger": self.batches_replayed,
            "Batches done by an earlier run": self.batches_resumed,
            "Batches compensated": self.batches_compensated,
            "Total EUR": f"{self.total_eur}",
        }


class Upstreams:
    """The services of a sync, loaded from block documents, with open clients."""

    def __init__(
        self,
        stack: ExitStack,
        records_api: str,
        rates_api: str,
        fallback_rates_api: str | None,
        ledger_api: str,
    ) -> None:
        records = load_service("records_api", records_api)
        rates = load_service("rates_api", rates_api)
        fallback = (
            load_service("fallback_rates_api", fallback_rates_api) if fallback_rates_api else None
        )
        ledger = load_service("ledger_api", ledger_api)
        self.identity = (records.base_url, rates.base_url, ledger.base_url)
        self.records = stack.enter_context(records.client())
        self.ledger = stack.enter_context(ledger.client())
        self.rates_sources = [
            RatesSource(name, service.base_url, stack.enter_context(service.client()))
            for name, service in (("primary", rates), ("fallback", fallback))
            if service is not None
        ]


@dataclass
class PagePlan:
    cursor: str | None
    limit: int
    page: RecordsPage
    converted: Converted

    @property
    def eur(self) -> Decimal:
        return sum((Decimal(e.amount_eur) for e in self.converted.entries), Decimal("0.00"))


@dataclass
class SyncPlan:
    """Pages done by earlier runs, pages to load, and what cannot be loaded."""

    done: list[PageOutcome] = field(default_factory=list)
    todo: list[PagePlan] = field(default_factory=list)
    lost_after: str | None = None  # why the page walk stopped early
    records_lost_at_least: int = 0

    @property
    def to_load_eur(self) -> Decimal:
        return sum((page.eur for page in self.todo), Decimal("0.00"))

    @property
    def quarantine_rate(self) -> float:
        """The share of invalid records among the records still to load."""
        records = sum(len(page.page.items) for page in self.todo)
        quarantined = sum(len(page.converted.quarantined) for page in self.todo)
        return quarantined / records if records else 0.0

    @property
    def lost(self) -> int:
        """Records that would not reach the ledger: skipped for want of a rate, or unseen."""
        skipped = sum(len(p.skipped) for p in self.done)
        skipped += sum(len(p.converted.skipped) for p in self.todo)
        return skipped + self.records_lost_at_least

    @property
    def total(self) -> int:
        records = sum(p.records for p in self.done) + sum(len(p.page.items) for p in self.todo)
        return records + self.records_lost_at_least

    @property
    def why_lost(self) -> str:
        return self.lost_after or "no EUR rate for some currencies"


def plan_sync(
    upstreams: Upstreams, rates: Rates, first: RecordsPage, batch_size: int, max_records: int | None
) -> SyncPlan:
    """Walk the page chain: checkpointed pages are done, the others fetched and converted."""
    plan = SyncPlan()
    cursor: str | None = None
    fetched: RecordsPage | None = first
    seen = 0
    while True:
        limit = min(batch_size, max_records - seen) if max_records else batch_size
        done = lookup(PageOutcome, *upstreams.identity, first.snapshot, cursor, limit)
        if done is not None:
            plan.done.append(done)
            seen, cursor = seen + done.records, done.next_cursor
        else:
            try:
                page = fetched or fetch_page(upstreams.records, cursor, limit)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 404:
                    raise
                plan.lost_after = f"page {len(plan.done) + len(plan.todo) + 1} answered 404"
                plan.records_lost_at_least = limit
                return plan
            converted = convert(page.items, rates)
            plan.todo.append(PagePlan(cursor, limit, page, converted))
            seen, cursor = seen + len(page.items), page.next_cursor
        fetched = None
        if cursor is None or (max_records and seen >= max_records):
            return plan


def load_page(
    upstreams: Upstreams, snapshot: str, planned: PagePlan, summary: SyncSummary
) -> tuple[PageOutcome, bool]:
    """Load one planned page at most once: POST its batch and checkpoint, all or nothing."""
    loaded = False
    key = (*upstreams.identity, snapshot, planned.cursor, planned.limit)
    try:
        with checkpoint(PageOutcome, *key) as cp:
            if cp.value is not None:  # another run got there first
                return cp.value, True
            entries = planned.converted.entries
            batch = Batch.of(entries) if entries else None
            # opaque: Prefect need not walk the batch's entries looking for futures
            receipt = step(load_batch, upstreams.ledger, opaque(batch)) if batch else None
            loaded = receipt is not None
            ledger = "empty" if receipt is None else "replayed" if receipt.replayed else "applied"
            cp.save(
                PageOutcome(
                    snapshot=snapshot,
                    cursor=planned.cursor,
                    next_cursor=planned.page.next_cursor,
                    records=len(planned.page.items),
                    valid=len(entries),
                    quarantined=planned.converted.quarantined,
                    skipped=planned.converted.skipped,
                    batch_id=batch.batch_id if batch else None,
                    ledger=ledger,
                    total_eur=batch.total_eur if batch else Decimal("0.00"),
                )
            )
    except Exception:
        if loaded:  # the rollback hook has DELETEd it
            summary.batches_compensated += 1
        raise
    return cp.value, False


def approval_reason(
    plan: SyncPlan, above_eur: Decimal | None, above_quarantine_rate: float | None
) -> str | None:
    """Why this sync needs a person's approval before it loads, if it does."""
    reasons = []
    if above_eur is not None and plan.to_load_eur > above_eur:
        reasons.append(f"it would load {plan.to_load_eur} EUR (threshold {above_eur} EUR)")
    rate = plan.quarantine_rate
    if above_quarantine_rate is not None and rate > above_quarantine_rate:
        reasons.append(
            f"{rate:.1%} of its records are invalid ({above_quarantine_rate:.1%} allowed)"
        )
    return " and ".join(reasons) or None


@flow(name="ledger-sync", retries=2, retry_delay_seconds=2, persist_result=False)
def ledger_sync(
    records_api: RecordsApi = "sandbox-records",
    rates_api: RatesApi = "sandbox-rates",
    fallback_rates_api: Annotated[
        str | None,
        Field(description="HttpService block document of the secondary rates service."),
    ] = "sandbox-rates-fallback",
    ledger_api: LedgerApi = "sandbox-ledger",
    batch_size: BatchSize = 200,
    max_records: Annotated[
        int | None, Field(ge=1, description="Stop after this many records (all if empty).")
    ] = None,
    max_rates_age_hours: Annotated[
        float, Field(gt=0, description="Stored rates younger than this may stand in.")
    ] = 24.0,
    max_loss_fraction: Annotated[
        float,
        Field(ge=0, le=1, description="Above this share of records lost, fail, loading nothing."),
    ] = 0.05,
    approval_above_eur: Annotated[
        EurAmount | None, Field(description="Pause for approval above this EUR total.")
    ] = None,
    approval_above_quarantine_rate: Annotated[
        float | None,
        Field(ge=0, le=1, description="Pause for approval above this share of invalid records."),
    ] = None,
    approval_timeout_seconds: Annotated[
        int, Field(ge=1, description="How long to wait for a decision.")
    ] = 3600,
    on_approval_timeout: Annotated[
        TimeoutPolicy, Field(description="What a timed-out approval means.")
    ] = "reject",
) -> SyncSummary | State:
    """Sync records into the ledger in EUR, exactly once, resuming from checkpoints.

    Args:
      records_api: Name of the HttpService block document of the records service to read.

      rates_api: Name of the HttpService block document of the primary rates service.

      fallback_rates_api: Name of the HttpService block document of the secondary rates
        service, asked when the primary fails; empty: no secondary service.

      ledger_api: Name of the HttpService block document of the ledger service to load into.

      batch_size: Records per page, and so per ledger batch, from 1 to 500.

      max_records: Stop after this many records (at least 1); empty: sync all of them.

      max_rates_age_hours: Hours; when no rates service answers, rates stored by an earlier
        run may stand in if they are younger than this.

      max_loss_fraction: Share of the records that may be lost (a page answering 404, no EUR
        rate), from 0 to 1, e.g. 0.05 for 5 %; above it the run fails, loading nothing.

      approval_above_eur: Pause for a person's approval when the sync would load more than
        this many EUR; empty: never pause for the amount.

      approval_above_quarantine_rate: Pause for a person's approval when more than this share
        of the records is invalid, from 0 to 1; empty: never pause for invalid records.

      approval_timeout_seconds: Seconds to wait for an approval decision, at least 1.

      on_approval_timeout: What a timed-out approval means: `reject` ends the run as
        Rejected, loading nothing; `approve` loads.
    """
    logger = get_run_logger()
    summary = SyncSummary()
    report = RunReport(title="Ledger sync", table_title="Quarantined and skipped records")
    try:
        with ExitStack() as stack:
            upstreams = Upstreams(stack, records_api, rates_api, fallback_rates_api, ledger_api)
            first_limit = min(batch_size, max_records or batch_size)
            first = fetch_page(upstreams.records, None, first_limit)
            summary.snapshot = first.snapshot
            rates = resolve_rates(
                upstreams.rates_sources, first.snapshot, timedelta(hours=max_rates_age_hours)
            )
            summary.rates_source = rates.source
            plan = plan_sync(upstreams, rates, first, batch_size, max_records)
            for done in plan.done:
                summary.add(done, resumed=True)
            summary.pages_lost = 1 if plan.lost_after else 0
            summary.records_lost_at_least = plan.records_lost_at_least
            for planned in plan.todo:
                report.table += [
                    {"record_id": q.record_id, "kind": kind, "reason": q.reason}
                    for kind, rows in (
                        ("quarantined", planned.converted.quarantined),
                        ("skipped", planned.converted.skipped),
                    )
                    for q in rows
                ]
            if plan.lost_after:
                report.notes.append(f"Stopped early: {plan.lost_after}.")

            if degradation.too_lossy(plan.lost, plan.total, max_loss_fraction):
                why = f"{plan.why_lost}; nothing loaded"
                failed = degradation.outcome(
                    "Ledger sync", None, plan.lost, plan.total, max_loss_fraction, why
                )
                report.status = f"FAILED: {failed.message}"
                return failed

            reason = approval_reason(plan, approval_above_eur, approval_above_quarantine_rate)
            if reason:
                decision = request_approval(
                    "Load this ledger sync?",
                    f"Snapshot {first.snapshot}: {reason}.",
                    approval_timeout_seconds,
                    on_approval_timeout,
                )
                report.notes.append(
                    f"Approval: {'granted' if decision.approved else 'refused'} by "
                    f"{decision.approver}: {decision.reason}"
                )
                if not decision.approved:
                    report.status = f"REJECTED by {decision.approver}: nothing loaded"
                    return Cancelled(name="Rejected", message=report.status)

            progress = Progress(len(plan.todo), "Batches loaded")
            for loaded, planned in enumerate(plan.todo, start=1):
                outcome, resumed = load_page(upstreams, first.snapshot, planned, summary)
                summary.add(outcome, resumed)
                progress.update(loaded)
            logger.info(
                "Loaded %d batches (%d replayed), %d pages resumed from checkpoints",
                summary.batches_applied + summary.batches_replayed,
                summary.batches_replayed,
                summary.pages_resumed,
            )

        result = degradation.outcome(
            "Ledger sync", summary, plan.lost, plan.total, max_loss_fraction, plan.why_lost
        )
        report.status = result.message if isinstance(result, State) else "completed"
        emit_event(
            event=COMPLETED_EVENT,
            resource={"prefect.resource.id": f"resilient-flows.ledger-sync.{flow_run.id}"},
            payload={
                "ledger_api": ledger_api,
                "snapshot": summary.snapshot,
                "total_eur": str(summary.total_eur),
                "state": result.name if isinstance(result, State) else "Completed",
            },
        )
        return result
    except Exception as exc:
        report.status = f"failed: {type(exc).__name__}: {exc}"
        return end_run_unless_transient(exc)
    finally:
        if summary.batches_compensated:
            report.notes.append(
                f"{summary.batches_compensated} batch(es) were compensated (DELETE) after their "
                "checkpoint failed; a retry applies them again."
            )
        report.figures = summary.figures()
        report.publish("ledger-sync")


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
            print(f"{label + ':':<42}{value}")
    if state.name != "Completed":
        print(f"The run ended {state.name}: {state.message}", file=sys.stderr)
    ui = PREFECT_UI_URL.value()  # None on Prefect's ephemeral server, which has no UI
    run_url = f"{ui}/runs/flow-run/{state.state_details.flow_run_id}" if ui else "(no UI)"
    print(f"{'Flow run:':<42}{run_url}")
    return 0 if state.name == "Completed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
