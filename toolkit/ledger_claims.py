"""What the ledger index says about a record or a batch, as plain values.

Scenario
    A flow that uses the ledger index (toolkit/ledger_index.py) names its values (a batch's
    state, a record's holder) in code that runs long before the index is opened, and every
    process that imports the flow would otherwise pay for importing SQLAlchemy and a
    database driver first, whether or not it ever syncs.

Solution
    The values live here, importable without a database: `BatchState`, `Holder`,
    `ClaimedBatch`, `PlannedBatch`, the `ledger_key` that names a ledger in the index, and
    `current_index`, which imports the index itself only when a sync asks for it.

How to run
    from toolkit.ledger_claims import BatchState, current_index
    index = current_index()  # the index of this process's settings
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.ledger_index import LedgerIndex


class BatchState(StrEnum):
    PLANNED = "planned"  # claimed by a walk, never sent: safe to give back
    APPROVED = "approved"  # may be in the ledger: post again (a replay) until applied
    APPLIED = "applied"  # the ledger answered 201 or 200


@dataclass(frozen=True)
class Holder:
    """The batch that holds a record id, and where in which walk it was planned."""

    batch_id: str
    walk: str
    position: int
    state: BatchState


@dataclass(frozen=True)
class ClaimedBatch:
    """A batch of a walk: its id, and the position in the walk of the page it comes from."""

    batch_id: str
    walk: str
    position: int


@dataclass(frozen=True)
class PlannedBatch:
    """What a claim decided to plan: a batch, the record ids it claims, its body to post."""

    batch_id: str
    record_ids: Sequence[str]
    body: str


def ledger_key(ledger: str) -> str:
    """A short, stable key for a ledger (its base URL) in the index and its lock."""
    return hashlib.sha256(ledger.encode()).hexdigest()[:32]


def current_index() -> LedgerIndex:
    """The index of this process's settings (`ledger_index_url`)."""
    from toolkit.ledger_index import LedgerIndex, ledger_index_url

    return LedgerIndex(ledger_index_url())
