"""Records, rates, ledger batches and the persisted state of a ledger sync.

Validation and conversion follow ../shared/upstream-api.md: an invalid record is quarantined
with a reason that names its field, never loaded; `amount_eur = amount / rates[currency]`,
rounded half-even to 2 places. Money is `Decimal` from the wire to the ledger, never float.
"""

from __future__ import annotations

import decimal
import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from toolkit.idempotency import content_hash
from toolkit.state import Versioned

CENT = Decimal("0.01")
BATCH_KEY_VERSION = 2
"""Version of the batch key scheme (not of the stored state): the same batch gets the same
Idempotency-Key across releases, so a batch in flight over an upgrade is a replay."""
_MONEY = decimal.Context(prec=34, rounding=ROUND_HALF_EVEN)


PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
"""The contract's amounts: digits, an optional fraction; no exponent, no sign but a minus."""


def parse_amount(value: Any) -> Decimal:
    """A non-negative decimal given as a plain decimal string (never a float, an exponent,
    `NaN` or `-0`)."""
    if not isinstance(value, str):
        raise ValueError(f"must be a decimal string, got {type(value).__name__}")
    if not PLAIN_DECIMAL.fullmatch(value):
        if value.strip().lower().lstrip("+-") in {"nan", "snan", "inf", "infinity"}:
            raise ValueError(f"not a finite decimal: {value!r}")
        raise ValueError(f"not a decimal: {value!r}")
    if value.startswith("-"):
        raise ValueError(f"negative amount: {value!r}")  # "-0" too: a sign means a debit
    return Decimal(value)


def _a_string(value: Any) -> Any:
    """Refuse anything but a string before pydantic's lax parsing (it reads 12345 as a time)."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    return value


class Record(BaseModel):
    """One record of the records service, as the contract defines it."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    account: str = Field(min_length=1)
    amount: Decimal
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    updated_at: datetime

    _amount = field_validator("amount", mode="before")(parse_amount)
    _updated_at = field_validator("updated_at", mode="before")(_a_string)


class Quarantined(BaseModel):
    record_id: str
    reason: str


class Entry(BaseModel):
    record_id: str
    account: str
    amount_eur: str

    def __str__(self) -> str:
        """The text a batch's id and Idempotency-Key hash for this entry: pydantic 2's repr of
        it, spelled out here so that the keys depend on this code, not on pydantic's (and
        cost a format, not a walk of the model per entry)."""
        return (
            f"record_id={self.record_id!r} account={self.account!r} amount_eur={self.amount_eur!r}"
        )


class RecordsPage(BaseModel):
    snapshot: str
    items: list[dict[str, Any]]
    next_cursor: str | None


class Rates(Versioned):
    """EUR rates, and where they came from.

    `complete` is false for the stand-in used when no rates service answered and no recent
    rates were stored: it knows only EUR itself, and a record in another currency is then
    skipped (not loadable now), not quarantined (not invalid).
    """

    KIND = "rates"

    base: Literal["EUR"]
    as_of: str
    rates: dict[str, Decimal]
    source: str = "primary"
    fetched_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    complete: bool = True

    @classmethod
    def unavailable(cls) -> Rates:
        return cls(base="EUR", as_of="", rates={"EUR": "1"}, source="none", complete=False)

    @field_validator("rates", mode="before")
    @classmethod
    def _positive(cls, rates: dict[str, Any]) -> dict[str, Decimal]:
        parsed = {currency: parse_amount(rate) for currency, rate in rates.items()}
        zero = [currency for currency, rate in parsed.items() if rate == 0]
        if zero:
            raise ValueError(f"rates of {zero} are zero")
        return parsed

    def to_eur(self, amount: Decimal, currency: str) -> Decimal:
        return _MONEY.divide(amount, self.rates[currency]).quantize(CENT, context=_MONEY)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "record"
    message = error["msg"].removeprefix("Value error, ")
    return f"{field}: {message}"


class Converted(BaseModel):
    """A page split four ways: entries to load, and records quarantined, skipped or repeated."""

    entries: list[Entry]
    quarantined: list[Quarantined]
    skipped: list[Quarantined]
    repeated: list[Quarantined] = []


def convert(items: list[Any], rates: Rates) -> Converted:
    """Validate and convert a page; a record that cannot be loaded says why, naming the field.

    Never raises for a record: whatever its shape, it is an entry or it is set aside. A record
    id served twice on the page is loaded once, at its first valid occurrence.
    """
    out = Converted(entries=[], quarantined=[], skipped=[])
    seen: set[str] = set()
    for position, item in enumerate(items):
        record_id = _label(item, position)
        try:
            entry = _entry(item, rates)
        except _NotLoadable as exc:
            (out.skipped if exc.skipped else out.quarantined).append(
                Quarantined(record_id=record_id, reason=exc.reason)
            )
            continue
        if entry.record_id in seen:
            reason = "id: repeated on this page (loaded once)"
            out.repeated.append(Quarantined(record_id=record_id, reason=reason))
            continue
        seen.add(entry.record_id)
        out.entries.append(entry)
    return out


class _NotLoadable(Exception):
    def __init__(self, reason: str, skipped: bool = False) -> None:
        self.reason, self.skipped = reason, skipped


def _label(item: Any, position: int) -> str:
    record_id = item.get("id") if isinstance(item, dict) else None
    return record_id if isinstance(record_id, str) and record_id else f"<no id, item {position}>"


def _entry(item: Any, rates: Rates) -> Entry:
    if not isinstance(item, dict):
        raise _NotLoadable(f"record: not a JSON object but {type(item).__name__}")
    try:
        record = Record.model_validate(item)
    except ValidationError as exc:
        raise _NotLoadable(_first_error(exc)) from None
    if record.currency not in rates.rates:
        if rates.complete:
            raise _NotLoadable(f"currency: unknown currency {record.currency!r}")
        reason = f"currency: no EUR rate for {record.currency} (rates unavailable)"
        raise _NotLoadable(reason, skipped=True)
    try:
        amount_eur = rates.to_eur(record.amount, record.currency)
    except decimal.DecimalException:
        raise _NotLoadable(f"amount: too large to convert to EUR: {item['amount']!r}") from None
    # Its fields are strings already validated: constructing skips validating them again.
    return Entry.model_construct(
        record_id=record.id, account=record.account, amount_eur=f"{amount_eur}"
    )


class Batch(BaseModel):
    """A ledger batch whose id and Idempotency-Key are functions of its content alone."""

    batch_id: str
    entries: list[Entry]

    @classmethod
    def of(cls, entries: list[Entry]) -> Batch:
        return cls(batch_id=f"b-{content_hash(entries, length=24)}", entries=entries)

    @property
    def idempotency_key(self) -> str:
        digest = content_hash(BATCH_KEY_VERSION, self.batch_id, self.entries, length=48)
        return f"ledger-sync-v{BATCH_KEY_VERSION}-{digest}"

    @property
    def total_eur(self) -> Decimal:
        return sum((Decimal(entry.amount_eur) for entry in self.entries), Decimal("0.00"))


class LedgerReceipt(BaseModel):
    batch_id: str
    accepted: int
    replayed: bool
