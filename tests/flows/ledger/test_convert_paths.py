"""The fast path of `convert` against the per-record one, on generated pages (Hypothesis).

`convert` sends each record through `_plain_entry` first and only what it refuses through the
pydantic `Record`; `convert(..., fast=False)` sends every record through `Record`. Whatever
the page (valid records, records damaged in any field, values of any JSON type, timestamps in
forms near the contract's, ids repeated), both must give the same entries, in the same order,
and set aside the same records with the same reasons.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.ledger.models import Rates, convert
from sandbox.dataset import RATES

RATES_SEEN = [
    Rates(base="EUR", as_of="x", rates=RATES),
    Rates.unavailable(),  # only EUR, incomplete: other currencies are skipped
    Rates(base="EUR", as_of="x", rates={"EUR": "1", "USD": "1.0800", "usd": "2", "EURO": "3"}),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=4,
)
digits = st.text(string.digits, min_size=1, max_size=12)
NEAR_AMOUNTS = ["-0", "-1.00", "-0.00", "1e5", "1E+2", " 1.00", "+1.00", "1.", ".5", "NaN"]
NEAR_AMOUNTS += ["inf", "١٢.٣٤", "1_000", "9" * 400, "0" * 50 + ".01", "12,50", "", "1.00\n"]
amounts = st.sampled_from(NEAR_AMOUNTS) | st.builds("-{}".format, digits) | digits
currencies = st.sampled_from([*RATES, "XYZ", "usd", "EURO", "US", "", "\uff35\uff33\uff24"])
moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))


def timestamp(moment: datetime, form: int, offset_minutes: int) -> str:
    """The contract's form (0-3) and forms near it that Python and pydantic read differently."""
    sign = "+" if offset_minutes >= 0 else "-"
    offset = f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
    base = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment:%H:%M:%S}"
    return [
        f"{base}Z",
        f"{base}.{moment.microsecond:06d}Z",
        f"{base}{offset}",
        f"{base}.{moment.microsecond // 1000:03d}{offset}",
        f"{base}.1234567Z",
        base,
        base.replace("T", " ") + "Z",
        base[:10],
        base[:13],  # an hour alone
        f"{base[:11]}24:00:00Z",
        f"{base[:17]}60Z",
        f"{base[:8]}31T00:00:00Z",
        f"{base.replace('-', '').replace(':', '')}Z",  # the basic format
        f"{moment:%G-W%V-%u}T{moment:%H:%M:%S}",  # a week date
        str(int(moment.replace(tzinfo=UTC).timestamp())),
        f"{base}z",
        f"{base} Z",
        f"{base}.Z",
        f"{base}{offset[:3]}",
        f"{base}{offset}:30",
    ][form]


FORMS = 20
timestamps = st.builds(
    timestamp, moments, st.integers(0, FORMS - 1), st.integers(-26 * 60, 26 * 60)
) | st.text(max_size=30)
valid_records = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=8),
        "account": st.text(min_size=1, max_size=8),
        "amount": st.builds(lambda whole, cents: f"{whole}.{cents}", digits, digits),
        "currency": st.sampled_from(list(RATES)),
        "updated_at": st.builds(timestamp, moments, st.integers(0, 3), st.integers(-1439, 1439)),
    }
)
NEAR = {
    "id": st.sampled_from(["r-1", "r-2", "", " "]) | st.text(max_size=4),
    "account": st.sampled_from(["", " ", "é"]) | st.text(max_size=4),
    "amount": amounts,
    "currency": currencies,
    "updated_at": timestamps,
}


@st.composite
def records(draw: st.DrawFn) -> Any:
    """A valid record, or one with one or two fields damaged: deleted, of another JSON type, or a
    value near the valid ones; now and then another field, or no object at all."""
    record: dict[str, Any] = draw(valid_records)
    if draw(st.integers(0, 3)) == 0:
        return record
    if draw(st.booleans()):
        record["id"] = draw(st.sampled_from(["r-1", "r-2", "r-3"]))  # ids served twice
    for field in draw(st.lists(st.sampled_from(sorted(NEAR)), min_size=1, max_size=2, unique=True)):
        how = draw(st.integers(0, 3))
        if how == 0:
            del record[field]
        elif how == 1:
            record[field] = draw(json_values)
        else:
            record[field] = draw(NEAR[field])
    if draw(st.integers(0, 4)) == 0:
        record["extra"] = draw(json_values)  # the contract's records may carry more fields
    return draw(json_values) if draw(st.integers(0, 19)) == 0 else record


def same_outcome(items: list[Any], rates: Rates) -> None:
    fast, reference = convert(items, rates), convert(items, rates, fast=False)
    assert fast.entries == reference.entries
    for kind in ("quarantined", "skipped", "repeated"):
        assert getattr(fast, kind) == getattr(reference, kind), kind


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), max_size=12), st.sampled_from(RATES_SEEN))
def test_pages_with_invalid_records_convert_the_same_both_ways(items, rates) -> None:
    same_outcome(items, rates)


@settings(max_examples=200, deadline=None)
@given(st.lists(valid_records, min_size=1, max_size=12))
def test_pages_of_valid_records_convert_the_same_both_ways(items) -> None:
    same_outcome(items, RATES_SEEN[0])
    assert convert(items, RATES_SEEN[0]).entries  # the contract's form is loadable


def test_the_fast_path_serves_the_contracts_records() -> None:
    """Not a timing: the plainly valid records must not fall back to `Record` (else the fast
    path would be correct and useless)."""
    from flows.ledger import models

    calls = []
    original = models._entry
    models._entry = lambda item, rates: calls.append(item) or original(item, rates)
    try:
        moment = datetime(2026, 11, 24, 10, tzinfo=UTC) + timedelta(seconds=1)
        item = {
            "id": "r-1",
            "account": "acc-17",
            "amount": "12.50",
            "currency": "USD",
            "updated_at": f"{moment:%Y-%m-%dT%H:%M:%S}Z",
        }
        assert convert([item], RATES_SEEN[0]).entries[0].amount_eur == "11.57"
    finally:
        models._entry = original
    assert calls == []
