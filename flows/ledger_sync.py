"""Ledger sync: move records from a paged records API into a ledger, exactly once per record.

Scenario
    Records arrive from a paged records service whose data lives: between two syncs, and even
    between a killed sync and its resume, records are added anywhere, so every page boundary
    moves; an id may be served twice; a snapshot expires; a buggy service repeats a cursor.
    Each valid record must land in the ledger converted to EUR, once and to the cent,
    whatever fails on the way: a page that answers 503, a POST whose answer is lost, the
    rates service down, the process killed mid-run. Invalid records are quarantined with a
    reason, never loaded, and never fail the run on their own. Unusual syncs wait for a
    person; partial ones say so loudly. A rerun with nothing new costs next to nothing.

Solution
    One sync per ledger at a time (the ledger index's lock), in four phases, each a module:
    1. Plan (flows/ledger/plan.py): go on with the sync's unfinished walk, or fetch the first
       page: a snapshot already synced means nothing to do. Each page is checkpointed as it
       arrives and its records claimed in the ledger index (toolkit/ledger_index.py), which
       records what each ledger holds: an id the ledger holds is never posted again, an id
       repeated in the snapshot is loaded once.
    2. Decide (decide.py): too much lost, fail loading nothing; unusual, ask a person.
    3. Load (load.py): post each claimed batch under its content-derived Idempotency-Key
       and record it applied, all or nothing (a rollback DELETEs the batch).
    4. Report (report.py): Completed, Degraded, or Incomplete; a report, a table and an
       event. Permanent errors end the run at once; transient ones get Prefect's flow
       retries, which go on from the checkpoints.

How to run
    make demo                                          # sandbox + local server + this flow
    python -m flows.ledger_sync batch_size=100         # against the saved block documents
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

from prefect import flow
from prefect.states import State
from pydantic import Field

from flows.ledger.decide import Rules, decide
from flows.ledger.load import load_sync
from flows.ledger.parameters import BatchSize, EurAmount, RatesAgeHours
from flows.ledger.plan import plan_sync
from flows.ledger.rates import stored_rates_age
from flows.ledger.report import COMPLETED_EVENT, SyncSummary, finish, report_of, summarize
from flows.ledger.sync_state import RunFigures
from flows.ledger.upstreams import open_upstreams
from toolkit.approval import TimeoutPolicy
from toolkit.cli import parse_parameters, started_here
from toolkit.ledger_claims import current_index
from toolkit.report import RunReport
from toolkit.retry import end_run_unless_transient, flow_retry_options

__all__ = ["COMPLETED_EVENT", "SyncSummary", "ledger_sync"]


@flow(name="ledger-sync", **flow_retry_options(), persist_result=False)
def ledger_sync(
    records_api: str = "sandbox-records",
    rates_api: str = "sandbox-rates",
    fallback_rates_api: str | None = "sandbox-rates-fallback",
    ledger_api: str = "sandbox-ledger",
    batch_size: BatchSize = 200,
    max_records: Annotated[int | None, Field(ge=1)] = None,
    max_rates_age_hours: RatesAgeHours = None,
    max_loss_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05,
    approval_above_eur: EurAmount | None = None,
    approval_above_quarantine_rate: Annotated[float | None, Field(ge=0, le=1)] = None,
    approval_timeout_seconds: Annotated[int, Field(ge=1)] = 3600,
    on_approval_timeout: TimeoutPolicy = "reject",
) -> SyncSummary | State:
    """Sync records into the ledger in EUR, once per record, going on from checkpoints.

    Args:
      records_api: Name of the HttpService block document of the records service to read.

      rates_api: Name of the HttpService block document of the primary rates service.

      fallback_rates_api: Name of the HttpService block document of the secondary rates
        service, asked when the primary fails; empty: no secondary service.

      ledger_api: Name of the HttpService block document of the ledger service to load into.

      batch_size: Records per page, and so at most per ledger batch, from 1 to 500; a run
        that goes on with an unfinished sync keeps that sync's page size.

      max_records: Sync only the first this many records of the snapshot (at least 1);
        empty: all of them.

      max_rates_age_hours: Hours; when no rates service answers, rates stored by an earlier
        run may stand in if they are younger than this; empty: the setting
        RESILIENT_FLOWS_MAX_RATES_AGE_HOURS (24 unless set).

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
    rules = Rules(
        max_loss_fraction,
        approval_above_eur,
        approval_above_quarantine_rate,
        approval_timeout_seconds,
        on_approval_timeout,
    )
    run, state = RunFigures(), None  # state: the sync's, once planned
    report = RunReport(title="Ledger sync", table_title="Records set aside")
    try:
        with open_upstreams(
            records_api=records_api,
            rates_api=rates_api,
            fallback_rates_api=fallback_rates_api,
            ledger_api=ledger_api,
        ) as upstreams:
            index = current_index()
            with index.lock(upstreams.ledger_url):
                rates_age = stored_rates_age(max_rates_age_hours)
                state = plan_sync(upstreams, index, run, batch_size, max_records, rates_age)
                verdict = decide(upstreams, index, state, run, rules)
                if verdict is not None:
                    report.status = verdict.message
                    return verdict
                load_sync(upstreams, index, state, run)
        result = finish(state, summarize(state, run), max_loss_fraction, ledger_api)
        report.status = result.message if isinstance(result, State) else "completed"
        return result
    except Exception as exc:
        report.status = f"failed: {type(exc).__name__}: {exc}"
        return end_run_unless_transient(exc)
    finally:
        report_of(report, state, summarize(state, run), run).publish("ledger-sync")


def main(argv: list[str]) -> int:
    """`python -m flows.ledger_sync [--verbose] [name=value ...]`: run once, showing a progress
    bar and only the warnings and errors of the logs (every line with --verbose), then print
    the summary and the run's link."""
    from toolkit.config import settings
    from toolkit.terminal import run_link, terminal_view

    parameters = parse_parameters(arg for arg in argv if arg != "--verbose")
    with started_here(), terminal_view(verbose="--verbose" in argv):
        state = ledger_sync(**parameters, return_state=True)
    print()
    if state.is_completed():
        summary: SyncSummary = state.result()
        for label, value in summary.figures().items():
            print(f"{label + ':':<42}{value}")
        if timings := settings().timings_file:
            times = {"pages": summary.pages, "seconds": summary.seconds_by_phase}
            Path(timings).write_text(json.dumps(times))
    if state.name != "Completed":
        print(f"The run ended {state.name}: {state.message}", file=sys.stderr)
    run_url = run_link(state.state_details.flow_run_id) or "(no UI)"  # ephemeral server
    print(f"{'Flow run:':<42}{run_url}")
    return 0 if state.name == "Completed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
