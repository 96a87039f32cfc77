"""Why a sync needs a person's approval (a pure function of its totals and the rules).

The pause, the refusal and the loss threshold run end to end in
tests/flows/test_ledger_sync_recovery.py.
"""

from __future__ import annotations

from decimal import Decimal

from flows.ledger.decide import Rules, approval_reason
from flows.ledger.models import Rates
from flows.ledger.sync_state import SyncState, Totals, WalkSpec

SPEC = WalkSpec(
    records_url="http://r",
    snapshot="s1",
    page_size=100,
    max_records=None,
    rates=Rates(base="EUR", as_of="x", rates={"EUR": "1"}),
)


def state(to_load_eur: str, records: int, quarantined: int) -> SyncState:
    totals = Totals(records=records, quarantined=quarantined, to_load_eur=Decimal(to_load_eur))
    return SyncState(phase="walked", walk=SPEC, totals=totals)


def test_no_thresholds_never_ask() -> None:
    assert approval_reason(state("1e9", 10, 9), Rules(max_loss_fraction=0.05)) is None


def test_only_what_is_new_counts_against_the_amount() -> None:
    rules = Rules(max_loss_fraction=0.05, approval_above_eur=Decimal("1000"))
    assert approval_reason(state("1000.00", 10, 0), rules) is None
    assert approval_reason(state("1000.01", 10, 0), rules) == (
        "it would load 1000.01 EUR (threshold 1000 EUR)"
    )


def test_both_reasons_are_given() -> None:
    rules = Rules(0.05, approval_above_eur=Decimal("1"), approval_above_quarantine_rate=0.1)
    assert approval_reason(state("5.00", 10, 2), rules) == (
        "it would load 5.00 EUR (threshold 1 EUR) and 20.0% of its records are invalid "
        "(10.0% allowed)"
    )
