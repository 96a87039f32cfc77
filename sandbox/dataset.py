"""Deterministic record data set served by the sandbox records service.

Scenario: flows need a realistic, reproducible data set with a known share of bad rows, and
tests need to know exactly which rows are bad and what the ledger should end up holding.
Solution: generate the records from ``random.Random(seed)``, corrupt an evenly spread subset
cycling through four kinds of damage, and derive the snapshot id (a content hash), the
expected EUR entries and their total from the same data.
How to run: ``Dataset.generate(2000, 0.05, seed=7).expected_total_eur()``.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

RATES: dict[str, str] = {
    "USD": "1.0800",
    "GBP": "0.8400",
    "EUR": "1",
    "CHF": "0.9500",
    "JPY": "162.50",
}
RATES_AS_OF = "2026-11-24T00:00:00Z"
CURRENCIES: tuple[str, ...] = tuple(RATES)
INVALID_KINDS: tuple[str, ...] = (
    "missing_field",
    "unknown_currency",
    "bad_amount",
    "negative_amount",
)
N_ACCOUNTS = 50
MAX_RECORDS = 999_999  # ids are zero-padded to 6 digits
CENT = Decimal("0.01")

_EPOCH = datetime(2026, 11, 1, tzinfo=UTC)
_SPAN_SECONDS = 23 * 24 * 3600


def to_eur(amount: str, rate: str) -> Decimal:
    """Convert an amount in a currency to EUR, given rate = units of that currency per EUR."""
    return (Decimal(amount) / Decimal(rate)).quantize(CENT, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Dataset:
    """Records sorted by id plus what a correct pipeline should make of them."""

    records: list[dict[str, str]]
    invalid: dict[str, str]  # record id -> kind of damage
    snapshot: str
    n_records: int
    invalid_fraction: float
    seed: int

    @classmethod
    def generate(cls, n_records: int, invalid_fraction: float, seed: int) -> Dataset:
        if not 0 <= n_records <= MAX_RECORDS:
            raise ValueError(f"n_records must be within 0..{MAX_RECORDS}")
        if not 0.0 <= invalid_fraction <= 1.0:
            raise ValueError("invalid_fraction must be within 0..1")
        rng = random.Random(seed)
        records = [_record(rng, number) for number in range(1, n_records + 1)]
        invalid: dict[str, str] = {}
        n_invalid = round(n_records * invalid_fraction)
        for k, index in enumerate(_spread(n_records, n_invalid)):
            kind = INVALID_KINDS[k % len(INVALID_KINDS)]
            _corrupt(rng, records[index], kind)
            invalid[records[index]["id"]] = kind
        # A content hash: the same data set always gets the same snapshot id, so cursors
        # survive a restart with the same arguments and change whenever the data does.
        digest = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
        return cls(records, invalid, digest[:12], n_records, invalid_fraction, seed)

    def valid_ids(self) -> set[str]:
        return {r["id"] for r in self.records if r["id"] not in self.invalid}

    def expected_entries(self) -> dict[str, Decimal]:
        """record id -> amount_eur that the ledger should hold exactly once."""
        return {
            r["id"]: to_eur(r["amount"], RATES[r["currency"]])
            for r in self.records
            if r["id"] not in self.invalid
        }

    def expected_total_eur(self) -> Decimal:
        return sum(self.expected_entries().values(), Decimal("0.00"))


def _record(rng: random.Random, number: int) -> dict[str, str]:
    cents = rng.randint(1, 500_000)
    updated_at = _EPOCH + timedelta(seconds=rng.randrange(_SPAN_SECONDS))
    return {
        "id": f"r-{number:06d}",
        "account": f"acc-{rng.randint(1, N_ACCOUNTS)}",
        "amount": f"{cents // 100}.{cents % 100:02d}",
        "currency": rng.choice(CURRENCIES),
        "updated_at": updated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _spread(n: int, k: int) -> list[int]:
    """k distinct indices evenly spread over range(n), so every page sees some bad rows."""
    return [(2 * j + 1) * n // (2 * k) for j in range(k)]


def _corrupt(rng: random.Random, record: dict[str, str], kind: str) -> None:
    if kind == "missing_field":
        del record[rng.choice(("account", "currency"))]
    elif kind == "unknown_currency":
        record["currency"] = "XYZ"
    elif kind == "bad_amount":
        record["amount"] = rng.choice((record["amount"].replace(".", ","), "abc"))
    elif kind == "negative_amount":
        record["amount"] = "-" + record["amount"]
    else:
        raise ValueError(f"unknown kind {kind!r}")
