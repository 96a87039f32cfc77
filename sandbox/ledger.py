"""Idempotent batch ledger behind the sandbox ledger service.

Scenario: a flow posts batches, may crash or lose the answer, retries, and compensates with
DELETE; tests must prove every record landed exactly once.
Solution: batches are keyed by Idempotency-Key with a canonical body fingerprint (same key and
body replays, different body conflicts); DELETE reverses a batch and releases its key; per
record counters record net and lifetime applications.
How to run: used by ``sandbox.server.Sandbox``; ``Ledger().post("k1", body_bytes)``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from sandbox.dataset import CENT

_DECIMAL = re.compile(r"-?\d+(\.\d+)?")
_ENTRY_FIELDS = ("record_id", "account", "amount_eur")

Answer = tuple[int, dict[str, object]]


@dataclass(frozen=True)
class _Batch:
    batch_id: str
    fingerprint: str
    entries: list[tuple[str, Decimal]]  # (record_id, amount_eur)

    def answer(self) -> dict[str, object]:
        return {"batch_id": self.batch_id, "accepted": len(self.entries)}


class Ledger:
    """Ledger state; not thread-safe on purpose, the server serialises calls under its lock."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._by_key: dict[str, _Batch] = {}
        self._key_of: dict[str, str] = {}  # batch_id -> key of the live batch holding it
        self._net: Counter[str] = Counter()
        self._ever: Counter[str] = Counter()
        self._entries = 0
        self._total = Decimal(0)

    def post(self, key: str | None, body: bytes) -> Answer:
        if not key:
            return 422, {"error": "missing Idempotency-Key header"}
        try:
            batch = _parse_batch(body)
        except ValueError as exc:
            return 422, {"error": str(exc)}
        live = self._by_key.get(key)
        if live is not None:
            if live.fingerprint != batch.fingerprint:
                return 409, {"error": "Idempotency-Key already used with a different body"}
            return 200, live.answer()
        if batch.batch_id in self._key_of:
            return 409, {"error": "batch_id already held under another Idempotency-Key"}
        self._by_key[key] = batch
        self._key_of[batch.batch_id] = key
        for record_id, amount in batch.entries:
            self._net[record_id] += 1
            self._ever[record_id] += 1
            self._total += amount
        self._entries += len(batch.entries)
        return 201, batch.answer()

    def delete(self, batch_id: str) -> bool:
        """Reverse a live batch and release its key; False when there was nothing to reverse."""
        key = self._key_of.pop(batch_id, None)
        if key is None:
            return False
        batch = self._by_key.pop(key)
        for record_id, amount in batch.entries:
            self._net[record_id] -= 1
            self._total -= amount
        self._entries -= len(batch.entries)
        return True

    def summary(self) -> dict[str, object]:
        total = self._total.quantize(CENT, rounding=ROUND_HALF_EVEN)
        return {"batches": len(self._by_key), "entries": self._entries, "total_eur": str(total)}

    def state(self) -> dict[str, object]:
        return {
            "summary": self.summary(),
            "net_applications": {rid: n for rid, n in sorted(self._net.items()) if n},
            "applications_ever": dict(sorted(self._ever.items())),
        }


def _parse_batch(body: bytes) -> _Batch:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("body is not JSON") from None
    if not isinstance(payload, dict):
        raise ValueError("body must be a JSON object")
    batch_id = payload.get("batch_id")
    if not isinstance(batch_id, str) or not batch_id:
        raise ValueError("batch_id must be a non-empty string")
    raw_entries = payload.get("entries")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise ValueError("entries must be a non-empty list")
    entries: list[tuple[str, Decimal]] = []
    for index, entry in enumerate(raw_entries):
        if not isinstance(entry, dict):
            raise ValueError(f"entries[{index}] must be an object")
        for name in _ENTRY_FIELDS:
            value = entry.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"entries[{index}].{name} must be a non-empty string")
        if not _DECIMAL.fullmatch(entry["amount_eur"]):
            raise ValueError(f"entries[{index}].amount_eur is not a decimal string")
        entries.append((entry["record_id"], Decimal(entry["amount_eur"])))
    # Canonical JSON so that a replay with different whitespace or key order still matches.
    fingerprint = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return _Batch(batch_id, fingerprint, entries)
