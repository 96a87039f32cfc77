"""Report a sync: its summary, its end state, the event that tells subscribers, the artifacts.

Scenario
    Someone opens the run in the UI and must know in a minute what it did: whether it went on
    with an earlier run's sync or found nothing new, how many records were new, repeated,
    invalid or already in the ledger, what it sent and what came back, and, if it did not
    end Completed, why.

Solution
    `summarize` turns the sync's state and this run's figures into a `SyncSummary` (the flow's
    result, printed by `make demo`); `finish` chooses the end: `Completed`, `Degraded` within
    the allowed loss (toolkit.degradation), or `Incomplete` (a Failed state, not retried)
    when the records service repeated a cursor and the rest of its snapshot is unknown.
    Completed and Degraded syncs publish `COMPLETED_EVENT` (flows/reconcile.py subscribes).
    `report_of` fills the run's markdown report and table of records set aside.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.states import Failed, State
from pydantic import BaseModel

from flows.ledger.sync_state import RunFigures, SyncState
from toolkit import degradation
from toolkit.report import RunReport
from toolkit.retry import spend_flow_retries

COMPLETED_EVENT = "resilient-flows.ledger-sync.completed"
"""Published when a sync ends Completed or Degraded; subscribers: see flows/reconcile.py."""


class SyncSummary(BaseModel):
    """What a sync did, as returned by the flow and printed by `make demo`."""

    snapshot: str = ""
    rates_source: str = ""
    resumed: bool = False
    nothing_new: bool = False
    pages: int = 0
    pages_fetched: int = 0
    pages_from_checkpoints: int = 0
    records: int = 0
    valid: int = 0
    quarantined: int = 0
    skipped: int = 0
    repeated: int = 0
    already_in_ledger: int = 0
    loaded: int = 0
    batches_applied: int = 0
    batches_replayed: int = 0
    batches_compensated: int = 0
    snapshots_expired: int = 0
    ended: str = ""
    total_eur: Decimal = Decimal("0.00")  # of the snapshot's valid records: all in the ledger
    seconds_by_phase: dict[str, float] = {}  # this run's wall time (toolkit/stopwatch.py)

    def figures(self) -> dict[str, Any]:
        return {
            "Snapshot": self.snapshot,
            "Rates from": self.rates_source,
            "Went on with an unfinished sync": "yes" if self.resumed else "no",
            "Nothing new (snapshot already synced)": "yes" if self.nothing_new else "no",
            "Pages (fetched, from checkpoints)": (
                f"{self.pages} ({self.pages_fetched}, {self.pages_from_checkpoints})"
            ),
            "Records": self.records,
            "Valid": self.valid,
            "Quarantined": self.quarantined,
            "Skipped (no rate)": self.skipped,
            "Repeated ids (loaded once)": self.repeated,
            "Already in the ledger": self.already_in_ledger,
            "Loaded by this run": self.loaded,
            "Batches applied": self.batches_applied,
            "Batches replayed by the ledger": self.batches_replayed,
            "Batches compensated": self.batches_compensated,
            "Snapshots expired (410)": self.snapshots_expired,
            "Walk ended": self.ended,
            "Total EUR": f"{self.total_eur}",
        }


def summarize(state: SyncState | None, run: RunFigures) -> SyncSummary:
    summary = SyncSummary(
        resumed=run.resumed,
        nothing_new=run.nothing_new,
        pages_fetched=run.pages_fetched,
        pages_from_checkpoints=run.pages_from_checkpoints,
        loaded=run.entries_loaded,
        batches_applied=run.batches_applied,
        batches_replayed=run.batches_replayed,
        batches_compensated=run.batches_compensated,
        snapshots_expired=run.snapshots_expired,
        seconds_by_phase=dict(run.clock.seconds),
    )
    if state is None:
        return summary
    totals = state.totals
    return summary.model_copy(
        update={
            "snapshot": state.walk.snapshot,
            "rates_source": state.walk.rates.source,
            "pages": totals.pages,
            "records": totals.records,
            "valid": totals.valid,
            "quarantined": totals.quarantined,
            "skipped": totals.skipped,
            "repeated": totals.repeated,
            "already_in_ledger": totals.already_held,
            "ended": f"{state.end.reason}: {state.end.detail}".rstrip(": ") if state.end else "",
            "total_eur": totals.valid_eur,
        }
    )


def finish(
    state: SyncState, summary: SyncSummary, max_loss_fraction: float, ledger_api: str
) -> SyncSummary | State:
    """The flow's end: the summary, Degraded, or Incomplete; and the completion event."""
    if state.end is not None and state.end.reason == "cursor_loop":
        spend_flow_retries()  # the same service would loop again at once
        return Failed(
            name="Incomplete",
            message=f"Stopped early: {state.end.detail}. The {summary.valid} valid records "
            "before it are in the ledger; the rest of the snapshot is unknown (not retried).",
            data=summary,
        )
    result = degradation.outcome(
        "Ledger sync", summary, state.lost, state.total, max_loss_fraction, state.why_lost
    )
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


def report_of(
    report: RunReport, state: SyncState | None, summary: SyncSummary, run: RunFigures
) -> RunReport:
    """Fill the run's report from the sync's state and this run's figures."""
    report.figures = summary.figures()
    report.notes += run.notes
    if state is None:
        return report
    if state.end is not None and state.end.detail:
        report.notes.append(f"Walk ended: {state.end.detail}.")
    set_aside = state.totals.quarantined + state.totals.skipped + state.totals.repeated
    report.table = [row.model_dump() for row in state.set_aside]
    if set_aside > len(state.set_aside):
        report.notes.append(
            f"The table shows the first {len(state.set_aside)} of {set_aside} records set "
            "aside; each page's checkpoint keeps its own."
        )
    if run.batches_compensated:
        report.notes.append(
            f"{run.batches_compensated} batch(es) were compensated (DELETE) after the ledger "
            "index could not record them; a retry applies them again."
        )
    return report
