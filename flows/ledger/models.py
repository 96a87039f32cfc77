"""Records, rates, ledger batches and the persisted state of a ledger sync.

Validation and conversion follow ../shared/upstream-api.md: an invalid record is quarantined
with a reason that names its field, never loaded; `amount_eur = amount / rates[currency]`,
rounded half-even to 2 places. Money is `Decimal` from the wire to the ledger, never float.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cached_property
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class Entry(NamedTuple):
    """One ledger entry: a record converted to EUR (stored as `[record_id, account, eur]`)."""

    record_id: str
    account: str
    amount_eur: str

    def key_text(self) -> str:
        """The text a batch's id and Idempotency-Key hash for this entry: pydantic 2's repr of
        the model it once was, spelled out so that the keys depend on this code alone."""
        return (
            f"record_id={self.record_id!r} account={self.account!r} amount_eur={self.amount_eur!r}"
        )


class RecordsPage(BaseModel):
    snapshot: str
    items: list[Any]  # each one validated by `convert`: a bad record is set aside, not the page
    next_cursor: str | None


class Rates(Versioned):
    """EUR rates, and where they came from.

    `complete` is false for the stand-in used when no rates service answered and no recent
    rates were stored: it knows only EUR itself, and a record in another currency is then
    skipped (not loadable now), not quarantined (not invalid).
    """

    KIND = "rates"
    FOLDERS_SINCE = 5  # pins in `pins/` (flows/ledger/rates.py), the last known good outside

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


def convert(items: list[Any], rates: Rates, *, fast: bool = True) -> Converted:
    """Validate and convert a page; a record that cannot be loaded says why, naming the field.

    Never raises for a record: whatever its shape, it is an entry or it is set aside. A record
    id served twice on the page is loaded once, at its first valid occurrence.

    Each record first meets `_plain_entry`, which takes only the plainly valid (exact types,
    the contract's formats, a known currency) and is several times cheaper than a pydantic
    model per record; anything else goes through `Record`, which decides and names the field.
    `fast=False` sends every record through `Record`: the reference the fast path is tested
    against (tests/flows/ledger/test_models.py).
    """
    out = Converted.model_construct(entries=[], quarantined=[], skipped=[], repeated=[])
    seen: set[str] = set()
    plain = _PlainRules(rates) if fast else None
    for position, item in enumerate(items):
        entry = _plain_entry(item, plain) if plain is not None else None
        if entry is None:
            try:
                entry = _entry(item, rates)
            except _NotLoadable as exc:
                (out.skipped if exc.skipped else out.quarantined).append(
                    Quarantined(record_id=_label(item, position), reason=exc.reason)
                )
                continue
        if entry.record_id in seen:
            reason = "id: repeated on this page (loaded once)"
            out.repeated.append(Quarantined(record_id=entry.record_id, reason=reason))
            continue
        seen.add(entry.record_id)
        out.entries.append(entry)
    return out


RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})"
)
"""The timestamps `_plain_entry` takes (the contract's form); other forms go to `Record`."""
CURRENCY = re.compile(r"[A-Z]{3}")


class _PlainRules:
    """What `_plain_entry` needs of the rates, worked out once per page."""

    def __init__(self, rates: Rates) -> None:
        self.rates = rates
        self.currencies = frozenset(c for c in rates.rates if CURRENCY.fullmatch(c))


def _plain_entry(item: Any, rules: _PlainRules) -> Entry | None:
    """The entry of a plainly valid record, or None: then `Record` decides (and says why)."""
    if type(item) is not dict:
        return None
    record_id, account, amount = item.get("id"), item.get("account"), item.get("amount")
    currency, updated_at = item.get("currency"), item.get("updated_at")
    if not (
        type(record_id) is str
        and record_id
        and type(account) is str
        and account
        and type(amount) is str
        and PLAIN_DECIMAL.fullmatch(amount)
        and amount[0] != "-"
        and type(currency) is str
        and currency in rules.currencies
        and type(updated_at) is str
        and RFC3339.fullmatch(updated_at)
    ):
        return None
    try:
        datetime.fromisoformat(updated_at)  # a real date and time (no 31 February)
        amount_eur = rules.rates.to_eur(Decimal(amount), currency)
    except (ValueError, decimal.DecimalException):
        return None
    return Entry(record_id, account, f"{amount_eur}")


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
    return Entry(record.id, record.account, f"{amount_eur}")


class Batch(BaseModel):
    """A ledger batch whose id, Idempotency-Key and body are functions of its content alone,
    each computed once (`of`): the body is what is posted, byte for byte, every time."""

    batch_id: str
    entries: list[Entry]

    @classmethod
    def of(cls, entries: list[Entry]) -> Batch:
        texts = _key_texts(entries)
        batch = cls.model_construct(batch_id=f"b-{_sha256(f'[{texts}]', 24)}", entries=entries)
        batch.__dict__["_texts"] = texts  # for the key: the entries' texts are joined once
        return batch

    @classmethod
    def from_body(cls, body: str) -> Batch:
        """The batch of a body that `of` made (kept by the ledger index until the ledger has
        it): posted again as these very bytes, under the same id and Idempotency-Key."""
        data = orjson.loads(body)
        entries = [Entry(e["record_id"], e["account"], e["amount_eur"]) for e in data["entries"]]
        batch = cls.model_construct(batch_id=data["batch_id"], entries=entries)
        batch.__dict__["body"] = body.encode()
        return batch

    @cached_property
    def idempotency_key(self) -> str:
        texts = self.__dict__.get("_texts") or _key_texts(self.entries)
        digest = _sha256(f"[{BATCH_KEY_VERSION},{json.dumps(self.batch_id)},{texts}]", 48)
        return f"ledger-sync-v{BATCH_KEY_VERSION}-{digest}"

    @cached_property
    def body(self) -> bytes:
        """The ledger's JSON body: `{"batch_id": ..., "entries": [{"record_id": ...}, ...]}`."""
        entries = [{"record_id": r, "account": a, "amount_eur": e} for r, a, e in self.entries]
        return orjson.dumps({"batch_id": self.batch_id, "entries": entries})

    @property
    def total_eur(self) -> Decimal:
        return sum((Decimal(entry.amount_eur) for entry in self.entries), Decimal("0.00"))


def _key_texts(entries: list[Entry]) -> str:
    """The JSON array of the entries' key texts, as `toolkit.idempotency.canonical_json` writes
    it: batch key scheme 2 hashes `[texts]` for the id and `[2, id, texts]` for the key."""
    return json.dumps([entry.key_text() for entry in entries], separators=(",", ":"))


def _sha256(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class LedgerReceipt(BaseModel):
    batch_id: str
    accepted: int
    replayed: bool
