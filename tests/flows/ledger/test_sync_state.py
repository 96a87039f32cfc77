"""The sync state's bookkeeping: totals, the walk's end, what a done sync covers (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from flows.ledger.models import Entry, Quarantined, Rates
from flows.ledger.sync_state import TABLE_LIMIT, Page, SyncState, WalkEnd, WalkSpec

RATES = Rates(base="EUR", as_of="x", rates={"EUR": "1"})


def spec(**changes) -> WalkSpec:
    fields = {"records_url": "http://r", "snapshot": "s1", "page_size": 2, "max_records": None}
    return WalkSpec(**{**fields, "rates": RATES, **changes})


def page(position: int, ids: list[str], next_cursor: str | None, bad: int = 0) -> Page:
    return Page(
        position=position,
        cursor=None if position == 0 else f"c{position}",
        next_cursor=next_cursor,
        records=len(ids) + bad,
        entries=[Entry(record_id=i, account="a", amount_eur="2.50") for i in ids],
        quarantined=[Quarantined(record_id=f"bad-{n}", reason="amount: x") for n in range(bad)],
        skipped=[],
        repeated=[],
    )


def test_totals_count_every_record_once() -> None:
    state = SyncState(phase="walking", walk=spec())
    state.add_page(page(0, ["r-1", "r-2"], "c1", bad=1), [], already_held=0, fresh=[])
    first = page(1, ["r-2", "r-3"], None)
    repeat = [Quarantined(record_id="r-2", reason="id: repeated")]
    state.add_page(first, repeat, already_held=0, fresh=first.entries[1:])

    totals = state.totals
    assert (totals.records, totals.valid, totals.quarantined, totals.repeated) == (5, 3, 1, 1)
    assert totals.to_load == 1 and totals.to_load_eur == Decimal("2.50")
    assert totals.valid_eur == Decimal("7.50")  # r-1, r-2, r-3; the repeat counts once
    assert state.phase == "walked" and state.end.reason == "end" and state.position == 2
    assert [row.kind for row in state.set_aside] == ["quarantined", "repeated"]


def test_max_records_ends_the_walk() -> None:
    state = SyncState(phase="walking", walk=spec(max_records=3))
    assert state.walk.limit_after(0) == 2 and state.walk.limit_after(2) == 1
    state.add_page(page(0, ["r-1", "r-2"], "c1"), [], 0, [])
    assert state.phase == "walking" and state.cursor == "c1"
    state.add_page(page(1, ["r-3"], "c2"), [], 0, [])
    assert state.phase == "walked" and state.end.reason == "max_records"


def test_the_report_table_is_capped_not_the_counts() -> None:
    state = SyncState(phase="walking", walk=spec())
    for n in range(3):
        state.add_page(page(n, [], f"c{n + 1}", bad=TABLE_LIMIT), [], 0, [])
    assert len(state.set_aside) == TABLE_LIMIT and state.totals.quarantined == 3 * TABLE_LIMIT


@pytest.mark.parametrize(
    ("end", "walked_max", "snapshot", "wanted_max", "covers"),
    [
        ("end", None, "s1", None, True),
        ("end", None, "s1", 10, True),
        ("end", None, "s2", None, False),  # the data changed: a new snapshot
        ("max_records", 100, "s1", 50, True),
        ("max_records", 100, "s1", 200, False),  # asks for more than was synced
        ("max_records", 100, "s1", None, False),
        ("missing_page", None, "s1", None, False),  # try again: the page may be back
        ("cursor_loop", None, "s1", None, False),
    ],
)
def test_what_a_done_sync_covers(end, walked_max, snapshot, wanted_max, covers) -> None:
    state = SyncState(phase="walking", walk=spec(max_records=walked_max))
    state.end_walk(WalkEnd(reason=end))
    state.phase = "done"
    assert state.covers(snapshot, wanted_max) is covers


def test_a_done_sync_that_skipped_records_covers_nothing() -> None:
    state = SyncState(phase="done", walk=spec(), end=WalkEnd(reason="end"))
    assert state.covers("s1", None)
    state.totals.skipped = 1  # no EUR rate for some: the next run tries them again
    assert not state.covers("s1", None)


def test_walks_share_pages_only_with_the_same_spec() -> None:
    assert spec().walk_id == spec().walk_id
    assert spec().walk_id != spec(page_size=3).walk_id
    assert spec().walk_id != spec(snapshot="s2").walk_id
    other_rates = Rates(base="EUR", as_of="x", rates={"EUR": "1", "USD": "1.08"})
    assert spec().walk_id != spec(rates=other_rates).walk_id
