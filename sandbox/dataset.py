"""Deterministic record data set served by the sandbox records service, and how it lives.

Scenario: flows need a realistic, reproducible data set with a known share of bad rows, and
tests need to know exactly which rows are bad and what the ledger should end up holding; the
contract also lets the data set live between snapshots (records added anywhere in the order,
the same id served twice), and a sync must stay exact through every such change.
Solution: generate the records from ``random.Random(seed)``, corrupt an evenly spread subset
cycling through four kinds of damage, and derive the snapshot id (a content hash), the
expected EUR entries and their total from the same data. ``grown`` and ``with_repeat`` return
a new, equally deterministic data set (new ids at the end, front or middle; an identical copy
of one record at a chosen index), and the expectations count every valid id once.
How to run: ``Dataset.generate(2000, 0.05, seed=7).grown(130, "front").expected_total_eur()``.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal, cast, get_args

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
# Ids are zero-padded to 6 digits and simply take a 7th past r-999999; the bound only keeps a
# typo from eating the host's memory (1,000,000 records take about 0.7 GB).
MAX_RECORDS = 9_999_999
CENT = Decimal("0.01")

Where = Literal["end", "front", "middle"]
WHERES: tuple[Where, ...] = get_args(Where)

_EPOCH = datetime(2026, 11, 1, tzinfo=UTC)
_SPAN_SECONDS = 23 * 24 * 3600
# Formatting from precomputed parts gives exactly what strftime gave, several times faster.
_DAYS: tuple[str, ...] = tuple(
    (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d") for day in range(_SPAN_SECONDS // 86400)
)
_ACCOUNTS: tuple[str, ...] = tuple(f"acc-{n}" for n in range(N_ACCOUNTS + 1))  # [0] unused


def to_eur(amount: str, rate: str) -> Decimal:
    """Convert an amount in a currency to EUR, given rate = units of that currency per EUR."""
    return (Decimal(amount) / Decimal(rate)).quantize(CENT, rounding=ROUND_HALF_EVEN)


def check_where(where: str) -> Where:
    """``where`` as a growth position, or ValueError naming the field."""
    if where not in WHERES:
        raise ValueError(f"where must be one of {', '.join(WHERES)}, not {where!r}")
    return cast(Where, where)


@dataclass(frozen=True)
class Dataset:
    """Records in serving order plus what a correct pipeline should make of them."""

    records: list[dict[str, str]]
    invalid: dict[str, str]  # record id -> kind of damage
    snapshot: str
    n_records: int  # len(records), repeats included
    invalid_fraction: float
    seed: int

    @classmethod
    def generate(cls, n_records: int, invalid_fraction: float, seed: int) -> Dataset:
        if not 0 <= n_records <= MAX_RECORDS:
            raise ValueError(f"n_records must be within 0..{MAX_RECORDS}")
        if not 0.0 <= invalid_fraction <= 1.0:
            raise ValueError("invalid_fraction must be within 0..1")
        rng = random.Random(seed)
        records, invalid = _fresh(rng, range(1, n_records + 1), invalid_fraction)
        return cls(records, invalid, _snapshot(records), n_records, invalid_fraction, seed)

    def grown(self, count: int, where: Where = "end") -> Dataset:
        """``count`` new records with new ids inserted at the end, the front or the middle."""
        if count < 1:
            raise ValueError("count must be at least 1")
        at = _insert_index(len(self.records), check_where(where))
        if len(self.records) + count > MAX_RECORDS:
            raise ValueError(f"count would take the data set past {MAX_RECORDS} records")
        first = _highest_number(self.records) + 1
        rng = random.Random(_growth_seed(self.seed, len(self.records)))
        added, invalid = _fresh(rng, range(first, first + count), self.invalid_fraction)
        records = self.records[:at] + added + self.records[at:]
        return self._changed(records, {**self.invalid, **invalid})

    def with_repeat(self, record_id: str, at: int) -> Dataset:
        """An identical copy of one record inserted at list index ``at``: its id served twice."""
        index = next((i for i, r in enumerate(self.records) if r["id"] == record_id), None)
        if index is None:
            raise ValueError(f"record_id {record_id!r} is not in the data set")
        if not 0 <= at <= len(self.records):
            raise ValueError(f"at must be within 0..{len(self.records)}")
        records = [*self.records[:at], dict(self.records[index]), *self.records[at:]]
        return self._changed(records, dict(self.invalid))

    def with_bad_record(self, at: int, **fields: Any) -> Dataset:
        """A new record (a new id) at list index ``at`` whose ``fields`` hold any JSON values
        (``amount="1e400"``, ``account=17``): invalid, so expected to be quarantined."""
        if not 0 <= at <= len(self.records):
            raise ValueError(f"at must be within 0..{len(self.records)}")
        number = _highest_number(self.records) + 1
        record: dict[str, Any] = {**_record(_below(random.Random(number)), number), **fields}
        records = [*self.records[:at], record, *self.records[at:]]
        return self._changed(records, {**self.invalid, record["id"]: "bad_record"})

    def valid_ids(self) -> set[str]:
        return {r["id"] for r in self.records if r["id"] not in self.invalid}

    def expected_entries(self) -> dict[str, Decimal]:
        """record id -> amount_eur that the ledger should hold exactly once."""
        entries: dict[str, Decimal] = {}
        for r in self.records:
            # A repeated id is one record served twice (identical copies): it counts once.
            if r["id"] not in self.invalid and r["id"] not in entries:
                entries[r["id"]] = to_eur(r["amount"], RATES[r["currency"]])
        return entries

    def expected_total_eur(self) -> Decimal:
        return sum(self.expected_entries().values(), Decimal("0.00"))

    def _changed(self, records: list[dict[str, str]], invalid: dict[str, str]) -> Dataset:
        # Same seed and fraction, so a later growth is derived the same way as this one.
        return replace(
            self,
            records=records,
            invalid=invalid,
            snapshot=_snapshot(records),
            n_records=len(records),
        )


def _fresh(
    rng: random.Random, numbers: range, invalid_fraction: float
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Records numbered ``numbers`` drawn from ``rng``, an evenly spread share corrupted."""
    below = _below(rng)
    records = [_record(below, number) for number in numbers]
    invalid: dict[str, str] = {}
    n_invalid = round(len(records) * invalid_fraction)
    for k, index in enumerate(_spread(len(records), n_invalid)):
        kind = INVALID_KINDS[k % len(INVALID_KINDS)]
        _corrupt(rng, records[index], kind)
        invalid[records[index]["id"]] = kind
    return records, invalid


def _snapshot(records: list[dict[str, str]]) -> str:
    # A content hash: the same data set always gets the same snapshot id, so cursors survive
    # a restart with the same arguments and change whenever the data does. (Records hold no
    # cycles; skipping that check only saves time, the text hashed is the same.)
    text = json.dumps(records, sort_keys=True, check_circular=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _below(rng: random.Random) -> Callable[[int], int]:
    # randint(a, b), randrange(n) and choice(seq) all reduce to rng._randbelow in CPython;
    # calling it directly draws the very same numbers without their per-call overhead, which
    # was most of the time spent generating a million records.
    return rng._randbelow  # type: ignore[attr-defined, no-any-return]


def _record(below: Callable[[int], int], number: int) -> dict[str, str]:
    # The draws, in this order, are randint(1, 500_000), randrange(_SPAN_SECONDS),
    # randint(1, N_ACCOUNTS) and choice(CURRENCIES): changing them changes every data set.
    cents = 1 + below(500_000)
    day, seconds = divmod(below(_SPAN_SECONDS), 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return {
        "id": f"r-{number:06d}",
        "account": _ACCOUNTS[1 + below(N_ACCOUNTS)],
        "amount": f"{cents // 100}.{cents % 100:02d}",
        "currency": CURRENCIES[below(len(CURRENCIES))],
        "updated_at": f"{_DAYS[day]}T{hours:02d}:{minutes:02d}:{seconds:02d}Z",
    }


def _spread(n: int, k: int) -> list[int]:
    """k distinct indices evenly spread over range(n), so every page sees some bad rows."""
    return [(2 * j + 1) * n // (2 * k) for j in range(k)]


def _insert_index(size: int, where: Where) -> int:
    return {"end": size, "front": 0, "middle": size // 2}[where]


def _highest_number(records: Iterable[dict[str, str]]) -> int:
    """The highest n of the ``r-{n:06d}`` ids, 0 for no records: new ids continue after it."""
    return max((int(r["id"][2:]) for r in records), default=0)


def _growth_seed(seed: int, size: int) -> str:
    # A str seed is hashed by Random (sha512), so it never collides with an int seed that
    # generate() uses, and the same data set grown the same way gets the same new records.
    return f"{seed}:grown-from:{size}"


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
