"""The plan's decision: which of a page's entries are new to the ledger (a pure function).

The walk itself, against a real records service and index, is tested end to end in
tests/flows/test_ledger_sync.py and tests/flows/test_ledger_sync_live.py.
"""

from __future__ import annotations

from flows.ledger.models import Entry
from flows.ledger.plan import split_entries
from toolkit.ledger_claims import BatchState, Holder


def entries(*numbers: int) -> list[Entry]:
    return [Entry(record_id=f"r-{n}", account="acc-1", amount_eur="1.00") for n in numbers]


def holder(walk: str, position: int, state: BatchState = BatchState.APPLIED) -> Holder:
    return Holder(batch_id=f"b-{walk}-{position}", walk=walk, position=position, state=state)


def test_entries_nobody_holds_are_fresh() -> None:
    split = split_entries(entries(1, 2), {}, walk="w", at=3)
    assert [e.record_id for e in split.fresh] == ["r-1", "r-2"]
    assert split.repeated == [] and split.already_held == 0


def test_an_id_held_by_an_earlier_walk_is_not_loaded_again() -> None:
    held = {"r-1": holder("old-walk", 7), "r-2": holder("old-walk", 0, BatchState.APPROVED)}
    split = split_entries(entries(1, 2, 3), held, walk="w", at=0)
    assert [e.record_id for e in split.fresh] == ["r-3"]
    assert split.already_held == 2 and split.repeated == []


def test_an_id_served_on_an_earlier_page_of_this_walk_is_a_repeat() -> None:
    held = {"r-1": holder("w", 1, BatchState.PLANNED)}
    split = split_entries(entries(1, 2), held, walk="w", at=4)
    assert [e.record_id for e in split.fresh] == ["r-2"]
    assert [(q.record_id, q.reason) for q in split.repeated] == [
        ("r-1", "id: repeated, first served on page 2 (loaded once)")
    ]


def test_this_pages_own_unsent_claim_is_still_fresh() -> None:
    """A page walked again after a kill finds its own planned claim: the same batch again."""
    held = {"r-1": holder("w", 4, BatchState.PLANNED), "r-2": holder("w", 4, BatchState.PLANNED)}
    split = split_entries(entries(1, 2), held, walk="w", at=4)
    assert [e.record_id for e in split.fresh] == ["r-1", "r-2"]


def test_this_pages_own_batch_once_loadable_is_held() -> None:
    """Walking a done snapshot again finds its pages' batches applied: nothing is new."""
    held = {"r-1": holder("w", 4, BatchState.APPLIED), "r-2": holder("w", 4, BatchState.APPROVED)}
    split = split_entries(entries(1, 2), held, walk="w", at=4)
    assert split.fresh == [] and split.already_held == 2
