"""Records, rates, ledger batches and the persisted state of a ledger sync.

Validation and conversion follow ../shared/upstream-api.md: an invalid record is quarantined
with a reason that names its field, never loaded; `amount_eur = amount / rates[currency]`,
rounded half-even to 2 places. Money is `Decimal` from the wire to the ledger, never float.
"""

from __future__ import annotations

import decimal
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from toolkit.idempotency import content_hash
from toolkit.state import STATE_SCHEMA_VERSION, Versioned

CENT = Decimal("0.01")
_MONEY = decimal.Context(prec=34, rounding=ROUND_HALF_EVEN)


def parse_amount(value: Any) -> Decimal:
    """A non-negative, finite decimal given as a string (the contract never sends floats)."""
    if not isinstance(value, str):
        raise ValueError(f"must be a decimal string, got {type(value).__name__}")
    try:
        amount = Decimal(value)
    except decimal.InvalidOperation:
        raise ValueError(f"not a decimal: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    if amount < 0:
        raise ValueError(f"negative amount: {value!r}")
    return amount


class Record(BaseModel):
    """One record of the records service, as the contract defines it."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    account: str = Field(min_length=1)
    amount: Decimal
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    updated_at: datetime

    _amount = field_validator("amount", mode="before")(parse_amount)


class Quarantined(BaseModel):
    record_id: str
    reason: str


class Entry(BaseModel):
    record_id: str
    account: str
    amount_eur: str


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
    """A page split three ways: entries to load, records quarantined, records skipped."""

    entries: list[Entry]
    quarantined: list[Quarantined]
    skipped: list[Quarantined]


def convert(items: list[dict[str, Any]], rates: Rates) -> Converted:
    """Validate and convert a page; an invalid record is quarantined with the reason."""
    out = Converted(entries=[], quarantined=[], skipped=[])
    for position, item in enumerate(items):
        record_id = str(item.get("id") or f"<no id, item {position}>")
        try:
            record = Record.model_validate(item)
        except ValidationError as exc:
            out.quarantined.append(Quarantined(record_id=record_id, reason=_first_error(exc)))
            continue
        if record.currency not in rates.rates:
            if rates.complete:
                reason = f"currency: unknown currency {record.currency!r}"
                out.quarantined.append(Quarantined(record_id=record_id, reason=reason))
            else:
                reason = f"currency: no EUR rate for {record.currency} (rates unavailable)"
                out.skipped.append(Quarantined(record_id=record_id, reason=reason))
            continue
        amount_eur = f"{rates.to_eur(record.amount, record.currency)}"
        out.entries.append(
            Entry(record_id=record.id, account=record.account, amount_eur=amount_eur)
        )
    return out


class Batch(BaseModel):
    """A ledger batch whose id and Idempotency-Key are functions of its content alone."""

    batch_id: str
    entries: list[Entry]

    @classmethod
    def of(cls, entries: list[Entry]) -> Batch:
        return cls(batch_id=f"b-{content_hash(entries, length=24)}", entries=entries)

    @property
    def idempotency_key(self) -> str:
        digest = content_hash(STATE_SCHEMA_VERSION, self.batch_id, self.entries, length=48)
        return f"ledger-sync-v{STATE_SCHEMA_VERSION}-{digest}"

    @property
    def total_eur(self) -> Decimal:
        return sum((Decimal(entry.amount_eur) for entry in self.entries), Decimal("0.00"))


class LedgerReceipt(BaseModel):
    batch_id: str
    accepted: int
    replayed: bool


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 kept only the ids of quarantined records and called the total `eur_total`."""
    reason = "not recorded (checkpoint written by schema v1)"
    data["quarantined"] = [
        {"record_id": record_id, "reason": reason} for record_id in data.pop("quarantined_ids", [])
    ]
    data["total_eur"] = data.pop("eur_total")
    return data


class PageOutcome(Versioned):
    """The checkpoint of one page: enough to report it and to go on, not the page itself."""

    KIND = "page"
    MIGRATIONS = {1: _v1_to_v2}

    snapshot: str
    cursor: str | None
    next_cursor: str | None
    records: int
    valid: int
    quarantined: list[Quarantined]
    skipped: list[Quarantined] = []
    batch_id: str | None
    ledger: Literal["applied", "replayed", "empty"]
    total_eur: Decimal
