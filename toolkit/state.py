"""Schema-versioned checkpoints in Prefect's result store.

Scenario: a run checkpoints each unit of work so that a retry, a `prefect flow-run retry` or a
new run with the same parameters skips what is done. Months later the checkpoint's shape
changes; checkpoints written by the old code must still be read, never crash the new one.

Solution: a checkpoint is a pydantic model (`Versioned`) stored as its own JSON (not pickle,
so no class path is baked into the file) in the result storage of the current run, under a
business key that carries the schema version (`sync/v5/<hash>`). Reading looks for the
current version first, then for older ones, and migrates them step by step (`MIGRATIONS[n]`
turns version n into n + 1; a model without one for n reads the old shape as it is); an old
record that cannot be read is logged and recomputed.

A checkpoint is written with the storage block's own `write_path`: one `model_dump_json`, no
result-record envelope around it, because a sync writes one per page and Prefect's envelope
(metadata, a second JSON encoding of the value) cost more than the page's other work.
Versions up to `LAST_ENVELOPED` were written through Prefect's `ResultStore`, and are read
through it.

Where it is stored is Prefect configuration (`PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK` for a
remote block, else `PREFECT_RESULTS_LOCAL_STORAGE_PATH`, by default under `PREFECT_HOME`),
never code. Records are not kept in memory once written: a sync of a million records writes
thousands of them.

A kind whose checkpoints are dropped together keeps them in folders (`walk-page/v5/<folder>/
<hash>`, from its `FOLDERS_SINCE` version on): `forget_folder` deletes one (toolkit/storage.py),
as a finished sync does with the pages of its walk.

Adding a version: bump `STATE_SCHEMA_VERSION`, change the model, and add to each changed
model a migration from the previous version; keep a stored example of the old shape in the
tests (see tests/toolkit/test_state.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from prefect.filesystems import WritableFileSystem
from prefect.results import ResultStore, get_default_result_storage, get_result_store
from prefect.serializers import JSONSerializer
from pydantic import BaseModel, ValidationError

from toolkit.idempotency import business_key

STATE_SCHEMA_VERSION = 5
"""Version of every persisted state shape; part of each checkpoint's key."""
LAST_ENVELOPED = 3
"""The last version written inside Prefect's result-record envelope (`ResultStore.write`)."""

logger = logging.getLogger("resilient_flows.state")


class Versioned(BaseModel):
    """Base of persisted state: a `kind` for its keys and migrations from older versions."""

    KIND: ClassVar[str]
    MIGRATIONS: ClassVar[dict[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {}
    FIRST_VERSION: ClassVar[int] = 1
    """The oldest version this kind was ever stored in: older keys are never looked up."""
    FOLDERS_SINCE: ClassVar[int | None] = None
    """The first version whose keys have a folder (`kind/vN/<folder>/<hash>`); None: never."""

    schema_version: int = STATE_SCHEMA_VERSION

    @classmethod
    def from_stored(cls, data: dict[str, Any], version: int) -> Versioned:
        """Validate a stored record of `version`, migrating it to the current version first."""
        for step in range(version, STATE_SCHEMA_VERSION):
            data = cls.MIGRATIONS[step](dict(data)) if step in cls.MIGRATIONS else dict(data)
            data["schema_version"] = step + 1
        return cls.model_validate(data)


V = TypeVar("V", bound=Versioned)


def state_store() -> ResultStore:
    """The current run's result storage, records written as plain JSON with inline metadata."""
    # A flow's store carries a NullFileSystem as metadata storage, on which nothing exists.
    update = {
        "serializer": JSONSerializer(),
        "metadata_storage": None,
        "cache_result_in_memory": False,  # memory must not grow with the pages of a sync
    }
    return get_result_store().model_copy(update=update)


def state_storage(store: ResultStore | None = None) -> WritableFileSystem:
    """The storage block the current run's results go to (Prefect's default if unset)."""
    store = store or get_result_store()
    return store.result_storage or get_default_result_storage(_sync=True)


def state_key(
    model: type[Versioned], parts: tuple[Any, ...], version: int, folder: str | None = None
) -> str:
    """Where a checkpoint of `version` is stored; `folder` only where that version has them."""
    key = business_key(model.KIND, *parts, version=version)
    if folder is None or model.FOLDERS_SINCE is None or version < model.FOLDERS_SINCE:
        return key
    return f"{folder_prefix(model, folder, version)}{key.rsplit('/', 1)[1]}"


def folder_prefix(model: type[Versioned], folder: str, version: int = STATE_SCHEMA_VERSION) -> str:
    """The storage prefix of a folder of checkpoints: `kind/vN/<folder>/`."""
    return f"{model.KIND}/v{version}/{folder}/"


def read_state(
    store: ResultStore, model: type[V], parts: tuple[Any, ...], folder: str | None = None
) -> tuple[V, int] | None:
    """The stored value and the version it was found under, newest version first."""
    for version in range(STATE_SCHEMA_VERSION, model.FIRST_VERSION - 1, -1):
        key = state_key(model, parts, version, folder)
        try:
            # One read, not exists() then read(): without metadata storage exists() reads too.
            content = _read(store, key, version)
        except Exception:  # missing (what Prefect's own exists() concludes from any error)
            continue
        try:
            if version == STATE_SCHEMA_VERSION:
                return model.model_validate_json(content), version
            data = content if version <= LAST_ENVELOPED else json.loads(content)
            return model.from_stored(data, version), version  # type: ignore[return-value]
        except (ValidationError, KeyError, TypeError, ValueError) as exc:
            logger.warning("Checkpoint %s (v%s) is unreadable, recomputing: %s", key, version, exc)
            return None
    return None


def _read(store: ResultStore, key: str, version: int) -> Any:
    """The stored value: the JSON bytes of a current record, the value inside an envelope."""
    if version <= LAST_ENVELOPED:
        return store.read(key).result
    # `_sync=True`: the block's blocking method, also when called from an event loop thread
    # (Prefect's result store calls its storage the same way).
    return state_storage(store).read_path(key, _sync=True)


def lookup(model: type[V], *parts: Any, folder: str | None = None) -> V | None:
    """The stored value for `parts`, if any; an older version is migrated and stored anew."""
    store = state_store()
    found = read_state(store, model, parts, folder)
    if found is None:
        return None
    value, version = found
    if version != STATE_SCHEMA_VERSION:
        remember(value, *parts, folder=folder)
    return value


def remember(value: Versioned, *parts: Any, folder: str | None = None) -> None:
    """Store state that no side effect depends on (no transaction), replacing any older."""
    key = state_key(type(value), parts, STATE_SCHEMA_VERSION, folder)
    content = value.model_dump_json().encode()
    state_storage().write_path(key, content=content, _sync=True)


def forget_folder(model: type[Versioned], folder: str) -> int:
    """Delete a folder of the current version's checkpoints; how many there were."""
    from toolkit.storage import delete_prefix

    return delete_prefix(folder_prefix(model, folder), state_storage())
