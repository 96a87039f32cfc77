"""Versioned checkpoints: migrations on read, the versions a kind is looked up in, unreadable
records recomputed, the current version stored as plain JSON; against a real result store on
disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prefect import flow
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore
from prefect.serializers import JSONSerializer

from toolkit.state import (
    LAST_ENVELOPED,
    STATE_SCHEMA_VERSION,
    Versioned,
    lookup,
    read_state,
    remember,
    state_key,
)


def _renamed(data: dict[str, Any]) -> dict[str, Any]:
    data["total"] = data.pop("sum")
    return data


class Tally(Versioned):
    """A kind stored since version 1, whose field `sum` became `total` in version 2."""

    KIND = "test-tally"
    MIGRATIONS: ClassVar = {1: _renamed}

    total: int


class Newer(Versioned):
    KIND = "test-newer"
    FIRST_VERSION = STATE_SCHEMA_VERSION

    total: int


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    return ResultStore(
        result_storage=LocalFileSystem(basepath=str(tmp_path)),
        serializer=JSONSerializer(),
        cache_result_in_memory=False,
    )


def test_a_version_1_record_is_migrated_step_by_step(store: ResultStore) -> None:
    store.write(key=state_key(Tally, ("a",), 1), obj={"schema_version": 1, "sum": 7})

    value, version = read_state(store, Tally, ("a",))

    assert version == 1 and value.total == 7 and value.schema_version == STATE_SCHEMA_VERSION


def write_current(store: ResultStore, value: Versioned, *parts: str) -> None:
    key = state_key(type(value), parts, STATE_SCHEMA_VERSION)
    store.result_storage.write_path(key, value.model_dump_json().encode(), _sync=True)


def test_the_current_version_wins_over_an_older_one(store: ResultStore) -> None:
    store.write(key=state_key(Tally, ("a",), 1), obj={"schema_version": 1, "sum": 1})
    write_current(store, Tally(total=2), "a")

    value, version = read_state(store, Tally, ("a",))

    assert (value.total, version) == (2, STATE_SCHEMA_VERSION)


def test_a_kind_is_not_looked_up_before_its_first_version(store: ResultStore) -> None:
    older = state_key(Newer, ("a",), STATE_SCHEMA_VERSION - 1)
    store.write(key=older, obj={"schema_version": STATE_SCHEMA_VERSION - 1, "total": 1})

    assert read_state(store, Newer, ("a",)) is None


def test_a_record_in_prefects_envelope_is_read_and_migrated(store: ResultStore) -> None:
    """The last enveloped version, as `ResultStore.write` stored it, is read through it."""
    older = state_key(Tally, ("a",), LAST_ENVELOPED)
    store.write(key=older, obj={"schema_version": LAST_ENVELOPED, "total": 3})

    value, version = read_state(store, Tally, ("a",))

    assert (value.total, value.schema_version, version) == (3, STATE_SCHEMA_VERSION, 3)


def test_an_unreadable_record_is_recomputed_not_raised(store: ResultStore, tmp_path: Path) -> None:
    key = state_key(Tally, ("a",), STATE_SCHEMA_VERSION)
    (tmp_path / key).parent.mkdir(parents=True)
    (tmp_path / key).write_text(json.dumps({"schema_version": STATE_SCHEMA_VERSION, "total": "x"}))
    assert read_state(store, Tally, ("a",)) is None  # does not validate
    (tmp_path / key).write_text('{"schema_version": 4, "tot')
    assert read_state(store, Tally, ("a",)) is None  # cut short
    store.write(key=key, obj={"schema_version": STATE_SCHEMA_VERSION, "total": 1})
    assert read_state(store, Tally, ("a",)) is None  # an envelope where none belongs


def test_remember_stores_the_models_own_json_in_the_runs_storage(
    prefect_server: str, result_storage: Path
) -> None:
    @flow
    def checkpoint() -> Tally | None:
        remember(Tally(total=5), "b")
        return lookup(Tally, "b")

    assert checkpoint().total == 5
    stored = (result_storage / state_key(Tally, ("b",), STATE_SCHEMA_VERSION)).read_bytes()
    assert json.loads(stored) == {"schema_version": STATE_SCHEMA_VERSION, "total": 5}
