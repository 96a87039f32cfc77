"""Plan a sync: walk one snapshot page by page, checkpoint each page, claim its new records.

Scenario
    The records service pages through a snapshot of data that lives (flows/ledger_sync.py).
    A killed sync must go on where it stopped without fetching again, and a person may have
    to approve the whole sync before anything is loaded.

Solution
    `plan_sync` continues the sync's unfinished walk if there is one (its cursors stay valid:
    same snapshot, same page size, same rates), else fetches the first page: a snapshot that
    a done sync already covered means there is nothing to do; another one starts a new walk.
    Each page is converted and checkpointed (`Page`) as soon as it arrives, then its records
    are checked against the ledger index (toolkit/ledger_index.py): an id the ledger already
    holds is not loaded again, an id served earlier in this snapshot is a repeat, and the rest
    is claimed as the page's batch, planned, not sent. The next page is fetched meanwhile
    (`pages_ahead`, one page ahead: toolkit/overlap.py), so a kill costs at most the page in
    flight and the one not yet checkpointed. Only running totals stay in memory; the
    `SyncState` above the pages is saved every second and at the end. A cursor served at two
    places of the walk is a loop: the walk ends there, marked. `404` ends it too (the page is
    lost); `410 Gone` means the snapshot expired: its walk is given up and a new snapshot
    begins, the index keeping the ledger exact.

    A page is not a task run, which would cost the Prefect server more CPU than the page
    costs the flow: its checkpoint is `Page`, its retries `toolkit.retry.call_upstream`'s
    (the upstream tasks' policy), its progress the run's progress artifact and logs.

How to run
    Called by flows/ledger_sync.py; see tests/flows/ledger/test_plan.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import httpx
from prefect import get_run_logger

from flows.ledger.models import Batch, Entry, Quarantined, convert
from flows.ledger.rates import resolve_rates
from flows.ledger.sync_state import (
    Page,
    RunFigures,
    SyncState,
    WalkEnd,
    WalkSpec,
    state_key,
    store_page,
    stored_page,
)
from flows.ledger.upstreams import Upstreams, get_page
from toolkit.ledger_claims import BatchState, Holder, PlannedBatch
from toolkit.overlap import ahead
from toolkit.report import Progress
from toolkit.retry import TransientError, call_upstream
from toolkit.state import lookup, remember
from toolkit.stopwatch import Stopwatch

if TYPE_CHECKING:  # imported when a sync opens it (toolkit/ledger_claims.py)
    from toolkit.ledger_index import LedgerIndex

SAVE_EVERY_SECONDS = 1.0
"""How often the sync state is saved while walking: pages are checkpointed one by one, so a
state a second old only means a resume re-reads a second's pages from their checkpoints."""
MAX_SNAPSHOT_RESTARTS = 3


class SnapshotExpired(Exception):
    """The walk's cursors answer 410 Gone: that snapshot cannot be finished."""


@dataclass(frozen=True)
class Split:
    """A page's valid entries against the ledger index."""

    fresh: list[Entry]  # to load
    repeated: list[Quarantined]  # served earlier in this snapshot
    already_held: int  # in the ledger, or claimed, before this walk


def split_entries(entries: list[Entry], holders: dict[str, Holder], walk: str, at: int) -> Split:
    """Which of a page's entries are new to the ledger (a pure decision).

    An entry held by the same page of the same walk, still only planned, is this page's own
    claim from an interrupted attempt: still fresh, so the batch comes out the same.
    """
    fresh, repeated, held = [], [], 0
    for entry in entries:
        holder = holders.get(entry.record_id)
        own = holder is not None and (holder.walk, holder.position) == (walk, at)
        if holder is None or (own and holder.state is BatchState.PLANNED):
            fresh.append(entry)
        elif holder.walk == walk and holder.position < at:
            reason = f"id: repeated, first served on page {holder.position + 1} (loaded once)"
            repeated.append(Quarantined(record_id=entry.record_id, reason=reason))
        else:
            held += 1
    return Split(fresh, repeated, held)


def plan_sync(
    upstreams: Upstreams,
    index: LedgerIndex,
    run: RunFigures,
    batch_size: int,
    max_records: int | None,
    max_rates_age: timedelta,
) -> SyncState:
    """The sync's state once its walk is over (or found done): nothing has been sent."""
    state = lookup(SyncState, *state_key(upstreams))
    for _ in range(MAX_SNAPSHOT_RESTARTS + 1):
        first_page: Page | None = None
        if state is not None and state.unfinished:
            run.resumed = True
            get_run_logger().info(
                "Going on with the unfinished sync of snapshot %s (%s, %d pages walked)",
                state.walk.snapshot,
                state.phase,
                state.position,
            )
        else:
            state, first_page = begin(upstreams, state, run, batch_size, max_records, max_rates_age)
            if first_page is None:
                return state  # nothing new
        # Claims of an earlier walk of this sync that was never sent are stale: give them back.
        index.release_planned(upstreams.ledger_url, upstreams.records_url, state.walk.walk_id)
        try:
            walk(upstreams, index, state, run, first_page)
            return state
        except SnapshotExpired:
            run.snapshots_expired += 1
            run.notes.append(f"Snapshot {state.walk.snapshot} expired (410): started again.")
            get_run_logger().warning("Snapshot %s expired: a new one begins", state.walk.snapshot)
            state = None
    raise TransientError(f"the records snapshot expired {MAX_SNAPSHOT_RESTARTS + 1} times")


def begin(
    upstreams: Upstreams,
    done: SyncState | None,
    run: RunFigures,
    batch_size: int,
    max_records: int | None,
    max_rates_age: timedelta,
) -> tuple[SyncState, Page | None]:
    """Fetch the first page: the done sync if it covers the snapshot (and no page), or a new
    walk of the snapshot and its first page, checkpointed."""
    limit = min(batch_size, max_records or batch_size)
    first = call_upstream(lambda: get_page(upstreams.records, None, limit), "the first page")
    run.pages_fetched += 1
    if done is not None and done.covers(first.snapshot, max_records):
        run.nothing_new = True
        get_run_logger().info("Nothing new: snapshot %s is synced", first.snapshot)
        return done, None
    spec = WalkSpec(
        records_url=upstreams.records_url,
        snapshot=first.snapshot,
        page_size=batch_size,
        max_records=max_records,
        rates=resolve_rates(upstreams.rates_sources, None, max_rates_age),  # kept in the state
    )
    state = SyncState(phase="walking", walk=spec)
    page = save_page(upstreams, state, first.items, first.next_cursor, run.clock)
    remember(state, *state_key(upstreams))  # a kill from now on resumes this snapshot
    return state, page


def walk(
    upstreams: Upstreams,
    index: LedgerIndex,
    state: SyncState,
    run: RunFigures,
    first_page: Page | None = None,
) -> None:
    """Walk on until the page chain ends; each page checkpointed, then its batch claimed,
    while the next page is on its way (`ahead`)."""
    saved_at = time.monotonic()
    progress = Progress(None, "Records walked")  # the snapshot's size is not known
    with ahead(pages_ahead(upstreams, state, first_page), depth=1) as arrivals:
        for arrived in run.clock.waits("GET wait", arrivals):
            if isinstance(arrived, WalkEnd):
                state.end_walk(arrived)
                break
            if isinstance(arrived, Fetched):
                page = save_page(upstreams, state, arrived.items, arrived.next_cursor, run.clock)
                run.pages_fetched += 1
            else:
                page = arrived
                run.pages_from_checkpoints += page is not first_page
            with run.clock.phase("claim"):
                split = claim_page(index, upstreams, state.walk.walk_id, page)
            state.add_page(page, split.repeated, split.already_held, split.fresh)
            progress.update(state.totals.records)
            if time.monotonic() - saved_at >= SAVE_EVERY_SECONDS:
                remember(state, *state_key(upstreams))
                saved_at = time.monotonic()
    progress.finish()
    remember(state, *state_key(upstreams))


@dataclass(frozen=True)
class Fetched:
    """A page as the records service served it: not yet converted nor checkpointed."""

    items: list
    next_cursor: str | None


def pages_ahead(
    upstreams: Upstreams, state: SyncState, first_page: Page | None
) -> Iterator[Page | Fetched | WalkEnd]:
    """The walk's pages from where `state` stands, in order: each from its checkpoint, else
    fetched; a `WalkEnd` where the chain breaks. It runs ahead of the walk, so it follows
    the chain itself: a cursor served at two places is a loop, whether or not the first
    place is checkpointed yet."""
    if state.phase != "walking":  # walked already: no page is left
        return
    spec = state.walk
    position, cursor, records = state.position, state.cursor, state.totals.records
    served_at: dict[str | None, int] = {}
    while True:
        page = first_page if position == 0 and first_page else stored_page(upstreams, spec, cursor)
        first_at = page.position if page is not None else served_at.get(cursor, position)
        if first_at != position:
            detail = (
                f"the records service served page {position + 1} under the cursor of "
                f"page {first_at + 1}: its cursors loop"
            )
            yield WalkEnd(reason="cursor_loop", detail=detail)
            return
        served_at[cursor] = position
        arrived = page or fetch(upstreams, spec, position, cursor, spec.limit_after(records))
        yield arrived
        if isinstance(arrived, WalkEnd):
            return
        position, cursor = position + 1, arrived.next_cursor
        records += arrived.records if isinstance(arrived, Page) else len(arrived.items)
        if cursor is None or (spec.max_records is not None and records >= spec.max_records):
            return


def fetch(
    upstreams: Upstreams, spec: WalkSpec, position: int, cursor: str | None, limit: int
) -> Fetched | WalkEnd:
    """Fetch a page of the walk; a `WalkEnd` if it is missing (404)."""
    try:
        fetched = call_upstream(
            lambda: get_page(upstreams.records, cursor, limit), f"page {position + 1}"
        )
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 410:
            raise SnapshotExpired from exc
        if exc.response.status_code != 404:
            raise
        detail = f"page {position + 1} answered 404"
        return WalkEnd(reason="missing_page", detail=detail, records_lost_at_least=limit)
    if fetched.snapshot != spec.snapshot:  # a cursor belongs to its snapshot: this one is gone
        raise SnapshotExpired
    return Fetched(fetched.items, fetched.next_cursor)


def save_page(
    upstreams: Upstreams, state: SyncState, items: list, next_cursor: str | None, clock: Stopwatch
) -> Page:
    with clock.phase("validate"):
        converted = convert(items, state.walk.rates)
    page = Page(
        position=state.position,
        cursor=state.cursor,
        next_cursor=next_cursor,
        records=len(items),
        entries=converted.entries,
        quarantined=converted.quarantined,
        skipped=converted.skipped,
        repeated=converted.repeated,
    )
    with clock.phase("checkpoint"):
        store_page(upstreams, state.walk, page)
    return page


def claim_page(index: LedgerIndex, upstreams: Upstreams, walk_id: str, page: Page) -> Split:
    """Split a page against the index and claim its fresh entries as one planned batch, in
    one transaction of the index."""
    split = Split([], [], 0)

    def plan(holders: dict[str, Holder]) -> PlannedBatch | None:
        nonlocal split
        split = split_entries(page.entries, holders, walk_id, page.position)
        if not split.fresh:
            return None
        batch = Batch.of(split.fresh)
        return PlannedBatch(batch.batch_id, [e.record_id for e in split.fresh], batch.body.decode())

    ids = [entry.record_id for entry in page.entries]
    index.claim(upstreams.ledger_url, upstreams.records_url, (walk_id, page.position), ids, plan)
    return split
