"""Schema-versioned checkpoints in Prefect's result store.

Scenario: a run checkpoints each unit of work so that a retry, a `prefect flow-run retry` or a
new run with the same parameters skips what is done. Months later the checkpoint's shape
changes; checkpoints written by the old code must still be read, never crash the new one.

Solution: a checkpoint is a pydantic model (`Versioned`) stored as plain JSON (not pickle, so
no class path is baked into the file) in the result store of the current run, under a
business key that carries the schema version (`page/v2/<hash>`). It is written inside a
Prefect transaction, as the block's last step: if the block raises, or the record cannot be
written, the transaction rolls back and runs the `on_rollback` hooks of the tasks that
completed in it (compensation). Tasks inside a checkpoint are called through `step()` (see
why there). Reading looks for the current version first, then for older ones, and migrates
them step by step (`MIGRATIONS[n]` turns version n into n + 1); an old record that cannot be
migrated is logged and recomputed.

Where it is stored is Prefect configuration (`PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK` for a
remote block, else `PREFECT_RESULTS_LOCAL_STORAGE_PATH`, by default under `PREFECT_HOME`),
never code.

Adding a version: bump `STATE_SCHEMA_VERSION`, change the model, and add to each changed
model a migration from the previous version; keep a stored example of the old shape in the
tests (see tests/toolkit/test_state.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from prefect.results import ResultStore, get_result_store
from prefect.serializers import JSONSerializer
from prefect.transactions import CommitMode, Transaction, transaction
from pydantic import BaseModel, ValidationError

from toolkit.idempotency import business_key
from toolkit.retry import TransientError

STATE_SCHEMA_VERSION = 2
"""Version of every persisted state shape; part of each checkpoint key and Idempotency-Key."""

logger = logging.getLogger("resilient_flows.state")


class CheckpointNotRecorded(TransientError):
    """The work ran but its checkpoint could not be written: rolled back, safe to retry."""


class Versioned(BaseModel):
    """Base of persisted state: a `kind` for its keys and migrations from older versions."""

    KIND: ClassVar[str]
    MIGRATIONS: ClassVar[dict[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {}

    schema_version: int = STATE_SCHEMA_VERSION

    @classmethod
    def from_stored(cls, data: dict[str, Any], version: int) -> Versioned:
        """Validate a stored record of `version`, migrating it to the current version first."""
        for step in range(version, STATE_SCHEMA_VERSION):
            data = cls.MIGRATIONS[step](dict(data)) if step in cls.MIGRATIONS else dict(data)
            data["schema_version"] = step + 1
        return cls.model_validate(data)


V = TypeVar("V", bound=Versioned)
R = TypeVar("R")


@dataclass
class Checkpoint(Generic[V]):
    """What a `checkpoint` block sees: the stored value if the work is done, else a way to save."""

    key: str
    value: V | None = None
    resumed: bool = False
    txn: Transaction | None = field(default=None, repr=False)
    store: ResultStore | None = field(default=None, repr=False)

    def save(self, value: V) -> None:
        """Write `value` as the unit's record: the last step of the block.

        The write happens inside the transaction (not at its commit), so a failed write
        rolls the transaction back and compensates the side effects done in it.
        """
        if self.txn is None or self.store is None:
            raise RuntimeError(f"checkpoint {self.key} is already recorded")
        try:
            self.store.write(key=self.key, obj=value.model_dump(mode="json"))
        except Exception as exc:
            raise CheckpointNotRecorded(f"checkpoint {self.key} could not be written") from exc
        self.value = value


def state_store() -> ResultStore:
    """The current run's result storage, records written as plain JSON with inline metadata."""
    # A flow's store carries a NullFileSystem as metadata storage, on which nothing exists.
    update = {"serializer": JSONSerializer(), "metadata_storage": None}
    return get_result_store().model_copy(update=update)


def state_key(model: type[Versioned], parts: tuple[Any, ...], version: int) -> str:
    return business_key(model.KIND, *parts, version=version)


def read_state(store: ResultStore, model: type[V], parts: tuple[Any, ...]) -> tuple[V, int] | None:
    """The stored value and the version it was found under, newest version first."""
    for version in range(STATE_SCHEMA_VERSION, 0, -1):
        key = state_key(model, parts, version)
        if not store.exists(key):
            continue
        try:
            data = store.read(key).result
            return model.from_stored(data, version), version  # type: ignore[return-value]
        except (ValidationError, KeyError, TypeError, ValueError) as exc:
            logger.warning("Checkpoint %s (v%s) is unreadable, recomputing: %s", key, version, exc)
            return None
    return None


def lookup(model: type[V], *parts: Any) -> V | None:
    """The stored value for `parts`, if any; an older version is migrated and stored anew."""
    store = state_store()
    found = read_state(store, model, parts)
    if found is None:
        return None
    value, version = found
    if version != STATE_SCHEMA_VERSION:
        remember(value, *parts)
    return value


def remember(value: Versioned, *parts: Any) -> None:
    """Store state that no side effect depends on (no transaction), replacing any older."""
    key = state_key(type(value), parts, STATE_SCHEMA_VERSION)
    state_store().write(key=key, obj=value.model_dump(mode="json"))


@contextmanager
def checkpoint(model: type[V], *parts: Any) -> Iterator[Checkpoint[V]]:
    """Run a unit of work at most once per business key `parts`.

    with checkpoint(PageOutcome, cursor) as cp:
        if cp.value is None:
            ... do the work, tasks through step() ...
            cp.save(PageOutcome(...))
    """
    key = state_key(model, parts, STATE_SCHEMA_VERSION)
    done = lookup(model, *parts)
    if done is not None:
        yield Checkpoint(key=key, value=done, resumed=True)
        return
    store = state_store()
    # LAZY: the steps run inside commit with this transaction, so a rollback reaches their hooks.
    with transaction(
        key=key, store=store, commit_mode=CommitMode.LAZY, overwrite=True, write_on_commit=False
    ) as txn:
        cp: Checkpoint[V] = Checkpoint(key=key, txn=txn, store=store)
        yield cp
        if cp.value is None:
            raise RuntimeError(f"checkpoint {key}: the block ended without save()")
    if txn.is_rolled_back():
        raise CheckpointNotRecorded(f"checkpoint {key} was rolled back")
    cp.txn = cp.store = None


def step(task: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Call a task as one step of the current checkpoint, its retries included.

    Prefect 3.9 rolls back the *enclosing* transaction when one attempt of a retried task
    fails (the attempt's `Transaction.reset` calls `parent.rollback()`), even if a later
    attempt succeeds; the enclosing checkpoint could then no longer compensate. A scope of
    its own per call takes that rollback; the successful attempt, and its `on_rollback`
    hooks, still join the checkpoint, so a later failure compensates it.
    """
    with transaction(commit_mode=CommitMode.LAZY) as scope:
        result = task(*args, **kwargs)
        scope.stage(result)  # the successful attempt is what counts, not the failed ones
    return result
