"""Validation and conversion of records (unit tests of pure functions)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from flows.ledger.models import Batch, Entry, Rates, convert
from sandbox.dataset import RATES, Dataset

GOOD = {
    "id": "r-1",
    "account": "acc-1",
    "amount": "10.00",
    "currency": "USD",
    "updated_at": "2026-11-24T10:00:00Z",
}
RATES_MODEL = Rates(base="EUR", as_of="2026-11-24T00:00:00Z", rates={"USD": "1.0800", "EUR": "1"})


@pytest.mark.parametrize(
    ("amount", "currency", "eur"),
    [
        ("10.00", "USD", "9.26"),
        ("0.01", "EUR", "0.01"),
        ("1.35", "USD", "1.25"),
        ("0.27", "USD", "0.25"),
    ],
)
def test_conversion_rounds_half_even_to_cents(amount: str, currency: str, eur: str) -> None:
    out = convert([{**GOOD, "amount": amount, "currency": currency}], RATES_MODEL)
    assert out.quarantined == [] and out.entries[0].amount_eur == eur


def test_half_even_on_an_exact_half() -> None:
    rates = Rates(base="EUR", as_of="x", rates={"XXX": "2"})
    out = convert([{**GOOD, "amount": "0.05", "currency": "XXX"}], rates)
    assert out.entries[0].amount_eur == "0.02"  # 0.025 rounds to the even cent


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"account": None}, "account: Input should be a valid string"),
        ({"amount": 12.5}, "amount: must be a decimal string"),
        ({"amount": "12,50"}, "amount: not a decimal"),
        ({"amount": "-1.00"}, "amount: negative amount"),
        ({"amount": "NaN"}, "amount: not a finite decimal"),
        ({"currency": "XYZ"}, "currency: unknown currency 'XYZ'"),
        ({"currency": "usd"}, "currency: String should match pattern"),
        ({"amount": "1e400"}, "amount: not a decimal: '1e400'"),  # exponent notation
        ({"amount": "1E+2"}, "amount: not a decimal"),
        ({"amount": "-0"}, "amount: negative amount: '-0'"),
        ({"amount": "-0.00"}, "amount: negative amount"),
        ({"amount": " 1.00"}, "amount: not a decimal"),
        ({"amount": "+1.00"}, "amount: not a decimal"),
        ({"amount": "Infinity"}, "amount: not a finite decimal"),
        ({"amount": "9" * 400}, "amount: too large to convert to EUR"),
        ({"amount": 10}, "amount: must be a decimal string, got int"),
        ({"amount": None}, "amount: must be a decimal string, got NoneType"),
        ({"amount": ["1.00"]}, "amount: must be a decimal string, got list"),
        ({"account": 17}, "account: Input should be a valid string"),
        ({"currency": 840}, "currency: Input should be a valid string"),
        ({"updated_at": 1764000000}, "updated_at: must be a string, got int"),
        ({"updated_at": "yesterday"}, "updated_at: Input should be a valid datetime"),
    ],
)
def test_invalid_records_are_quarantined_with_the_field(change: dict, reason: str) -> None:
    out = convert([{**GOOD, **change}], RATES_MODEL)
    assert out.entries == [] and out.skipped == [] and out.quarantined[0].record_id == "r-1"
    assert out.quarantined[0].reason.startswith(reason)


def test_every_sandbox_invalid_record_is_quarantined_and_no_valid_one() -> None:
    dataset = Dataset.generate(n_records=400, invalid_fraction=0.1, seed=3)
    rates = Rates(base="EUR", as_of="x", rates=RATES)
    out = convert(dataset.records, rates)
    assert {q.record_id for q in out.quarantined} == set(dataset.invalid)
    expected = dataset.expected_entries()
    assert {e.record_id: Decimal(e.amount_eur) for e in out.entries} == expected


def test_without_rates_only_eur_loads_and_the_rest_is_skipped_not_quarantined() -> None:
    dataset = Dataset.generate(n_records=200, invalid_fraction=0.1, seed=3)
    out = convert(dataset.records, Rates.unavailable())
    assert {q.record_id for q in out.quarantined} <= set(dataset.invalid)
    assert out.skipped and all("rates unavailable" in s.reason for s in out.skipped)
    assert {e.record_id for e in out.entries} == {
        r["id"]
        for r in dataset.records
        if r.get("currency") == "EUR" and r["id"] not in dataset.invalid
    }


@pytest.mark.parametrize(
    ("item", "label", "reason"),
    [
        ({**GOOD, "id": 7}, "<no id, item 0>", "id: Input should be a valid string"),
        ({**GOOD, "id": ""}, "<no id, item 0>", "id: String should have at least 1 character"),
        ("r-1", "<no id, item 0>", "record: not a JSON object but str"),
        (None, "<no id, item 0>", "record: not a JSON object but NoneType"),
        ([GOOD], "<no id, item 0>", "record: not a JSON object but list"),
    ],
)
def test_a_record_of_any_shape_is_quarantined_never_raised(item, label, reason) -> None:
    out = convert([item], RATES_MODEL)
    assert out.entries == [] and [(q.record_id, q.reason) for q in out.quarantined] == [
        (label, reason)
    ]


def test_an_id_twice_on_a_page_is_loaded_once_at_its_first_valid_occurrence() -> None:
    invalid_first = {**GOOD, "id": "r-2", "amount": "abc"}
    items = [GOOD, {**GOOD, "amount": "99.00"}, invalid_first, {**GOOD, "id": "r-2"}, GOOD]
    out = convert(items, RATES_MODEL)
    assert [(e.record_id, e.amount_eur) for e in out.entries] == [("r-1", "9.26"), ("r-2", "9.26")]
    assert [q.record_id for q in out.repeated] == ["r-1", "r-1"]
    assert out.repeated[0].reason == "id: repeated on this page (loaded once)"
    assert [q.record_id for q in out.quarantined] == ["r-2"]


def test_a_batch_keeps_its_id_and_idempotency_key_across_releases() -> None:
    """Keys of batch key scheme 2, as every release since it computed them: a batch in flight
    over an upgrade must be a replay, never a second application."""
    batch = Batch.of(
        [
            Entry(record_id="r-1", account='acc "q" \\ é', amount_eur="1.00"),
            Entry(record_id="r'2", account="x", amount_eur="0.00"),
        ]
    )
    assert batch.batch_id == "b-21e7373c1cb8e780ac867742"
    assert (
        batch.idempotency_key == "ledger-sync-v2-e328e8d16dec6c4cecffa17af5c4d589924cd6c72c5b1c0d"
    )


def test_an_entrys_key_text_is_the_repr_of_the_model_it_once_was() -> None:
    """Batch key scheme 2 hashed pydantic 2's repr of an `Entry` model: the texts stay."""
    from pydantic import BaseModel

    class ModelEntry(BaseModel):
        record_id: str
        account: str
        amount_eur: str

    for text in ["plain", "it's", 'say "hi"', "back\\slash", "é\nnew line", "'\"both\"'"]:
        entry = Entry(record_id=text, account=text, amount_eur="1.00")
        assert entry.key_text() == str(ModelEntry(**entry._asdict()))


def test_a_batch_body_is_the_contracts_json_and_reads_back_as_the_batch() -> None:
    batch = Batch.of([Entry("r-1", 'acc "q" é', "1.00"), Entry("r-2", "x", "0.10")])
    assert json.loads(batch.body) == {
        "batch_id": batch.batch_id,
        "entries": [
            {"record_id": "r-1", "account": 'acc "q" é', "amount_eur": "1.00"},
            {"record_id": "r-2", "account": "x", "amount_eur": "0.10"},
        ],
    }
    again = Batch.model_validate_json(batch.body)
    assert (again.batch_id, again.idempotency_key) == (batch.batch_id, batch.idempotency_key)
