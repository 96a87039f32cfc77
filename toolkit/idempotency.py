"""Deterministic keys for caches, checkpoints and side effects.

Scenario: a run dies after its POST reached the ledger but before it heard the answer; the
retry, or tomorrow's run over the same data, must not apply the batch a second time.

Solution: every key is a hash of the *business* content it stands for (never a run id, a
timestamp or a random value), so any run that does the same work computes the same key.
Side effects carry it as an `Idempotency-Key`; checkpoints are stored under it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no whitespace, pydantic models as JSON."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(*parts: Any, length: int = 32) -> str:
    """A hex digest of the canonical JSON of `parts`."""
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()[:length]


def business_key(kind: str, *parts: Any, version: int) -> str:
    """A storage key such as `page/v2/3f1c...`: readable kind and schema version, hashed rest."""
    return f"{kind}/v{version}/{content_hash(*parts)}"
