"""Versioned checkpoints: migrations on read, the versions a kind is looked up in, unreadable
records recomputed; against a real result store on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore
from prefect.serializers import JSONSerializer

from toolkit.state import STATE_SCHEMA_VERSION, Versioned, read_state, state_key


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


def test_the_current_version_wins_over_an_older_one(store: ResultStore) -> None:
    store.write(key=state_key(Tally, ("a",), 1), obj={"schema_version": 1, "sum": 1})
    current = Tally(total=2).model_dump(mode="json")
    store.write(key=state_key(Tally, ("a",), STATE_SCHEMA_VERSION), obj=current)

    value, version = read_state(store, Tally, ("a",))

    assert (value.total, version) == (2, STATE_SCHEMA_VERSION)


def test_a_kind_is_not_looked_up_before_its_first_version(store: ResultStore) -> None:
    older = state_key(Newer, ("a",), STATE_SCHEMA_VERSION - 1)
    store.write(key=older, obj={"schema_version": STATE_SCHEMA_VERSION - 1, "total": 1})

    assert read_state(store, Newer, ("a",)) is None


def test_an_unreadable_record_is_recomputed_not_raised(store: ResultStore, tmp_path: Path) -> None:
    key = state_key(Tally, ("a",), STATE_SCHEMA_VERSION)
    store.write(key=key, obj={"schema_version": STATE_SCHEMA_VERSION, "total": "many"})
    assert read_state(store, Tally, ("a",)) is None  # does not validate
    (tmp_path / key).write_text(json.dumps({"cut": "short"}))
    assert read_state(store, Tally, ("a",)) is None  # not a record at all
