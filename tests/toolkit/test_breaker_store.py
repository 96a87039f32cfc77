"""toolkit/breaker_store.py: each Lua script's decisions, one at a time, against real Redis.

Every test starts from a breaker hash written by hand (times on Redis's own clock) and checks
the script's reply and what it left in the hash. The scenarios that string these decisions
together (threads, processes, a sandbox upstream) are in test_breaker.py.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Iterator
from fnmatch import fnmatch

import pytest

from tests.helpers import ROOT
from toolkit.breaker_store import (
    KEY_PREFIX,
    SCRIPTS,
    BreakerStore,
    Transition,
    script_source,
    store_for,
    transition_of,
)
from toolkit.config import settings


@pytest.fixture
def store() -> BreakerStore:
    return store_for(settings().redis_url)


@pytest.fixture
def name(store: BreakerStore) -> Iterator[str]:
    """A breaker of this test's own; its hash is deleted afterwards."""
    name = f"test-store-{uuid.uuid4().hex[:12]}"
    yield name
    store.client.delete(KEY_PREFIX + name)


def redis_now(store: BreakerStore) -> float:
    seconds, microseconds = store.client.time()
    return seconds + microseconds / 1_000_000


def put(store: BreakerStore, name: str, **fields: object) -> None:
    store.client.hset(KEY_PREFIX + name, mapping={k: str(v) for k, v in fields.items()})


def stored(store: BreakerStore, name: str) -> dict[str, str]:
    return store.client.hgetall(KEY_PREFIX + name)


# -- the scripts ship with the package -----------------------------------------------------------


def test_every_script_starts_with_redis_clock_and_ships_in_the_wheel() -> None:
    lua = sorted(path.name for path in SCRIPTS.iterdir() if path.name.endswith(".lua"))
    assert lua == ["acquire.lua", "clock.lua", "record.lua", "reset.lua"]
    clock = (SCRIPTS / "clock.lua").read_text()
    for script in ("acquire", "record", "reset"):
        assert script_source(script).startswith(clock + "-- ")
    # A non-editable install (the Docker image) carries only what package-data names.
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = setuptools["package-data"]["toolkit"]
    assert all(any(fnmatch(f"breaker_scripts/{f}", g) for g in globs) for f in lua)


def test_transition_of_reads_a_reply() -> None:
    assert transition_of("rates", "", "closed", 0, "1.5") is None
    assert transition_of("rates", "closed", "open", "5", "1700000000.250000") == Transition(
        "rates", "closed", "open", 5, 1700000000.25
    )


# -- acquire.lua ---------------------------------------------------------------------------------


def test_closed_allows_and_writes_nothing(store: BreakerStore, name: str) -> None:
    acquired = store.acquire(name, cooldown=30, probe_timeout=30, token="t1")
    assert (acquired.decision, acquired.state, acquired.transition) == ("allow", "closed", None)
    assert stored(store, name) == {}


def test_open_rejects_for_the_rest_of_its_cooldown(store: BreakerStore, name: str) -> None:
    put(store, name, state="open", failures=5, opened_at=redis_now(store) - 10)
    acquired = store.acquire(name, cooldown=30, probe_timeout=30, token="t1")
    assert (acquired.decision, acquired.state, acquired.transition) == ("reject", "open", None)
    assert 19 < acquired.retry_in <= 20
    assert stored(store, name)["state"] == "open"


def test_open_past_its_cooldown_gives_one_caller_the_probe(store: BreakerStore, name: str) -> None:
    before = redis_now(store)
    put(store, name, state="open", failures=5, opened_at=before - 31)
    first = store.acquire(name, cooldown=30, probe_timeout=60, token="t1")
    second = store.acquire(name, cooldown=30, probe_timeout=60, token="t2")

    assert first.decision == "probe" and first.transition is not None
    assert (first.transition.from_state, first.transition.to_state) == ("open", "half_open")
    assert first.transition.failures == 5 and first.transition.at >= before
    assert (second.decision, second.state, second.transition) == ("reject", "half_open", None)
    assert 59 < second.retry_in <= 60  # the rest of the probe's time
    hash_ = stored(store, name)
    assert (hash_["state"], hash_["probe_token"]) == ("half_open", "t1")
    assert float(hash_["probe_deadline"]) == pytest.approx(first.transition.at + 60)


def test_a_probe_past_its_deadline_goes_to_the_next_caller(store: BreakerStore, name: str) -> None:
    put(store, name, state="half_open", probe_token="t1", probe_deadline=redis_now(store) - 1)
    acquired = store.acquire(name, cooldown=30, probe_timeout=60, token="t2")
    assert (acquired.decision, acquired.state, acquired.transition) == ("probe", "half_open", None)
    assert stored(store, name)["probe_token"] == "t2"


# -- record.lua ----------------------------------------------------------------------------------


def test_failures_while_closed_count_up_to_the_threshold(store: BreakerStore, name: str) -> None:
    assert store.record(name, "failure", token="", threshold=3) is None
    assert store.record(name, "failure", token="", threshold=3) is None
    opened = store.record(name, "failure", token="", threshold=3)

    assert opened is not None
    assert (opened.from_state, opened.to_state, opened.failures) == ("closed", "open", 3)
    hash_ = stored(store, name)
    assert (hash_["state"], hash_["failures"]) == ("open", "3")
    assert float(hash_["opened_at"]) == pytest.approx(opened.at)


def test_a_success_while_closed_ends_the_run_of_failures(store: BreakerStore, name: str) -> None:
    store.record(name, "failure", token="", threshold=3)
    store.record(name, "failure", token="", threshold=3)
    assert store.record(name, "success", token="", threshold=3) is None
    assert store.read(name).failures == 0
    assert store.record(name, "failure", token="", threshold=3) is None


def test_closed_calls_ending_after_the_trip_are_ignored(store: BreakerStore, name: str) -> None:
    put(store, name, state="open", failures=3, opened_at=123.5)
    for outcome in ("failure", "success", "abandon"):
        assert store.record(name, outcome, token="", threshold=3) is None
    assert stored(store, name) == {"state": "open", "failures": "3", "opened_at": "123.5"}


def half_open(store: BreakerStore, name: str, token: str = "t1") -> None:
    put(store, name, state="half_open", failures=4, opened_at=100.0, probe_token=token)


def test_a_successful_probe_closes(store: BreakerStore, name: str) -> None:
    half_open(store, name)
    closed = store.record(name, "success", token="t1", threshold=3)
    assert closed is not None
    assert (closed.from_state, closed.to_state, closed.failures) == ("half_open", "closed", 0)
    assert set(stored(store, name)) == {"state", "failures", "changed_at"}
    assert store.read(name).state == "closed"


def test_a_failed_probe_reopens_with_a_new_cooldown(store: BreakerStore, name: str) -> None:
    half_open(store, name)
    opened = store.record(name, "failure", token="t1", threshold=3)
    assert opened is not None
    assert (opened.from_state, opened.to_state, opened.failures) == ("half_open", "open", 5)
    state = store.read(name)
    assert state.state == "open" and state.opened_at == pytest.approx(opened.at)
    assert "probe_token" not in stored(store, name)


def test_an_abandoned_probe_frees_the_probe_now(store: BreakerStore, name: str) -> None:
    half_open(store, name)
    put(store, name, probe_deadline=redis_now(store) + 60)
    assert store.record(name, "abandon", token="t1", threshold=3) is None
    assert stored(store, name)["probe_deadline"] == "0"
    assert store.acquire(name, cooldown=30, probe_timeout=60, token="t2").decision == "probe"


def test_the_outcome_of_a_probe_taken_over_changes_nothing(store: BreakerStore, name: str) -> None:
    half_open(store, name, token="t2")
    before = stored(store, name)
    for outcome in ("failure", "success", "abandon"):
        assert store.record(name, outcome, token="t1", threshold=3) is None
    assert stored(store, name) == before


# -- reset.lua -----------------------------------------------------------------------------------


def test_reset_closes_and_reports_only_a_real_move(store: BreakerStore, name: str) -> None:
    assert store.reset(name) is None  # closed already
    put(store, name, state="open", failures=7, opened_at=100.0)
    moved = store.reset(name)
    assert moved is not None
    assert (moved.from_state, moved.to_state, moved.failures) == ("open", "closed", 7)
    assert stored(store, name) == {}
