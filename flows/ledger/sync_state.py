"""The durable state of a ledger sync: the pages of its walk, and one state above them.

A sync walks the pages of one records snapshot (flows/ledger/plan.py), asks whether it may
load (decide.py), and loads (load.py). Each fetched, converted page is a checkpoint of its own
(`Page`), keyed on the walk and the page's cursor: a cursor always returns the same page of
its snapshot, so a page fetched once is never fetched again by this walk. A walk's pages are
kept in a folder of their own, inside their sync's, and deleted once the sync is recorded done
or rejected (`drop_pages`): a kill between the two leaves a done sync whose pages no run
reads, for `python -m deployments prune` to delete. Above the pages,
one `SyncState` per records service and ledger says which snapshot the sync is in, how far it
walked, the running totals the decision needs, and the phase:

    walking -> walked -> loading -> done
                     \\-> rejected (refused, or too lossy: its claims given back)

A run that finds its sync unfinished continues it (same snapshot, same walk); one that finds
it done or rejected fetches the first page, and when the snapshot is one that is done, it has
nothing to do. Both models are `Versioned` (toolkit/state.py): old shapes migrate on read.
`RunFigures`, what one run did, is not stored: the run's report reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from prefect import get_run_logger
from pydantic import BaseModel, Field

from flows.ledger.models import Entry, Quarantined, Rates
from toolkit.idempotency import content_hash
from toolkit.state import Versioned, forget_folder, lookup, remember
from toolkit.stopwatch import Stopwatch

if TYPE_CHECKING:
    from flows.ledger.upstreams import Upstreams

TABLE_LIMIT = 200
"""Rows of quarantined, skipped and repeated records kept for the report (all are counted)."""

Phase = Literal["walking", "walked", "loading", "done", "rejected"]


class WalkSpec(BaseModel):
    """What a walk reads: one snapshot, in pages of one size, converted with one set of rates."""

    records_url: str
    snapshot: str
    page_size: int
    max_records: int | None
    rates: Rates

    @property
    def walk_id(self) -> str:
        """Pages are shared by every walk with the same spec (two ledgers, say)."""
        return content_hash(
            self.records_url,
            self.snapshot,
            self.page_size,
            self.max_records,
            {currency: str(rate) for currency, rate in self.rates.rates.items()},
            self.rates.complete,
        )

    def limit_after(self, records: int) -> int:
        """The page size to ask for once `records` records have been walked."""
        if self.max_records is None:
            return self.page_size
        return min(self.page_size, self.max_records - records)


class Page(Versioned):
    """One fetched page of a walk, converted: what a resume needs instead of fetching it."""

    KIND = "walk-page"
    FIRST_VERSION = 3
    FOLDERS_SINCE = 5  # a folder per walk (flows/ledger/plan.py `pages_folder`)

    position: int  # 0-based place in the walk
    cursor: str | None  # None for the first page
    next_cursor: str | None
    records: int
    entries: list[Entry]
    quarantined: list[Quarantined]
    skipped: list[Quarantined]
    repeated: list[Quarantined]  # ids served twice on this page


class Totals(BaseModel):
    """Running totals of a walk: every record is valid, quarantined, skipped or repeated."""

    pages: int = 0
    records: int = 0
    valid: int = 0  # distinct ids, valid
    quarantined: int = 0
    skipped: int = 0  # valid, but no EUR rate this time
    repeated: int = 0  # served again in this snapshot: loaded once
    already_held: int = 0  # valid, and in the ledger (or claimed) before this walk
    to_load: int = 0  # valid and new: what the load will post
    batches: int = 0
    valid_eur: Decimal = Decimal("0.00")  # of the valid records: in the ledger once done
    to_load_eur: Decimal = Decimal("0.00")


class WalkEnd(BaseModel):
    """Why a walk stopped."""

    reason: Literal["end", "max_records", "missing_page", "cursor_loop"]
    detail: str = ""
    records_lost_at_least: int = 0

    @property
    def complete(self) -> bool:
        return self.reason in ("end", "max_records")


class SetAside(BaseModel):
    """A row of the report's table: a record not loaded, and why."""

    record_id: str
    kind: Literal["quarantined", "skipped", "repeated"]
    reason: str


class SyncState(Versioned):
    """Where one sync (records service -> ledger) stands; the checkpoint above its pages."""

    KIND = "sync"
    FIRST_VERSION = 3

    phase: Phase
    walk: WalkSpec
    position: int = 0  # pages walked
    cursor: str | None = None  # of the next page to walk (None: the first page)
    end: WalkEnd | None = None
    totals: Totals = Field(default_factory=Totals)
    set_aside: list[SetAside] = Field(default_factory=list)  # the first TABLE_LIMIT rows

    @property
    def unfinished(self) -> bool:
        return self.phase in ("walking", "walked", "loading")

    def covers(self, snapshot: str, max_records: int | None) -> bool:
        """Whether a done sync already did what a run over `snapshot` would do (a sync that
        skipped records for want of a rate did not: the next run tries them again)."""
        if self.phase != "done" or self.walk.snapshot != snapshot or self.end is None:
            return False
        if self.totals.skipped:
            return False
        if self.end.reason == "end":
            return True
        wanted, walked = max_records, self.walk.max_records
        return self.end.reason == "max_records" and wanted is not None and wanted <= walked

    def add_page(
        self, page: Page, repeated: list[Quarantined], already_held: int, fresh: list[Entry]
    ) -> None:
        """Count a walked page (`repeated`: its ids served earlier in the snapshot)."""
        totals = self.totals
        totals.pages += 1
        totals.records += page.records
        totals.valid += len(page.entries) - len(repeated)
        totals.quarantined += len(page.quarantined)
        totals.skipped += len(page.skipped)
        totals.repeated += len(page.repeated) + len(repeated)
        totals.already_held += already_held
        totals.to_load += len(fresh)
        totals.batches += bool(fresh)
        repeated_ids = {q.record_id for q in repeated}
        totals.valid_eur += sum(
            (Decimal(e.amount_eur) for e in page.entries if e.record_id not in repeated_ids),
            Decimal("0.00"),
        )
        totals.to_load_eur += sum((Decimal(e.amount_eur) for e in fresh), Decimal("0.00"))
        for kind, rows in (
            ("quarantined", page.quarantined),
            ("skipped", page.skipped),
            ("repeated", [*page.repeated, *repeated]),
        ):
            room = TABLE_LIMIT - len(self.set_aside)
            self.set_aside += [
                SetAside(record_id=q.record_id, kind=kind, reason=q.reason) for q in rows[:room]
            ]
        self.position += 1
        self.cursor = page.next_cursor
        if page.next_cursor is None:
            self.end_walk(WalkEnd(reason="end"))
        elif self.walk.max_records is not None and totals.records >= self.walk.max_records:
            self.end_walk(WalkEnd(reason="max_records"))

    def end_walk(self, end: WalkEnd) -> None:
        self.end = end
        self.phase = "walked"

    @property
    def lost(self) -> int:
        """Records that will not reach the ledger: skipped, or never seen (a missing page)."""
        return self.totals.skipped + (self.end.records_lost_at_least if self.end else 0)

    @property
    def why_lost(self) -> str:
        if self.end is not None and self.end.reason == "missing_page":
            return self.end.detail
        return "no EUR rate for some currencies"

    @property
    def total(self) -> int:
        return self.totals.records + (self.end.records_lost_at_least if self.end else 0)

    @property
    def quarantine_rate(self) -> float:
        return self.totals.quarantined / self.totals.records if self.totals.records else 0.0


def state_key(upstreams: Upstreams) -> tuple[str, str, str]:
    return ("sync", upstreams.records_url, upstreams.ledger_url)


def pages_folder(upstreams: Upstreams, walk_id: str) -> str:
    """The folder of a walk's pages, inside its sync's (named as its `SyncState`'s key), so a
    sync deletes only its own pages, and a prune sees which sync each folder belongs to."""
    return f"{content_hash(*state_key(upstreams))}/{walk_id}"


def stored_page(upstreams: Upstreams, walk: WalkSpec, cursor: str | None) -> Page | None:
    """The walk's page at `cursor`, if it is checkpointed."""
    return lookup(Page, walk.walk_id, cursor, folder=pages_folder(upstreams, walk.walk_id))


def store_page(upstreams: Upstreams, walk: WalkSpec, page: Page) -> None:
    remember(page, walk.walk_id, page.cursor, folder=pages_folder(upstreams, walk.walk_id))


def drop_pages(upstreams: Upstreams, state: SyncState) -> None:
    """Delete the pages of the sync's walk once the sync is recorded done or rejected: no run
    reads them again. A kill halfway leaves a done sync and some pages, which `python -m
    deployments prune` deletes; so does a failure here, which is only logged."""
    logger = get_run_logger()
    try:
        dropped = forget_folder(Page, pages_folder(upstreams, state.walk.walk_id))
    except Exception as exc:
        logger.warning("The walk's page checkpoints are kept (a prune deletes them): %s", exc)
        return
    logger.info("Deleted the %d page checkpoints of the walk, which is over", dropped)


@dataclass
class RunFigures:
    """What this run did, as opposed to what the sync as a whole has done."""

    resumed: bool = False  # went on with a sync an earlier run left unfinished
    nothing_new: bool = False  # the snapshot was synced already
    pages_fetched: int = 0
    pages_from_checkpoints: int = 0
    snapshots_expired: int = 0
    batches_applied: int = 0
    batches_replayed: int = 0
    batches_compensated: int = 0
    entries_loaded: int = 0
    notes: list[str] = field(default_factory=list)
    clock: Stopwatch = field(default_factory=Stopwatch)  # where the run's time went
