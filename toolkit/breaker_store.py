"""Where a circuit breaker's state lives: one Redis hash per breaker, changed only by Lua.

Scenario: every worker on every machine must see the same breaker, and two of them must never
both win the same transition (both probe, both announce it).

Solution: each decision is a Lua script in `toolkit/breaker_scripts/` (`acquire.lua`,
`record.lua`, `reset.lua`, each run after `clock.lua`), read with `importlib.resources` so it
ships inside the package, and run atomically by Redis on Redis's own clock. A script that makes
a transition says so in its reply, which reaches only its one caller: `BreakerStore` turns that
reply into a `Transition` for that caller alone. `store_for(url)` is this process's store per
Redis URL (one client, its scripts registered once); `store_for.cache_clear()` forgets them.

How to run:
    store = store_for("redis://127.0.0.1:6379/0")
    store.acquire("rates", cooldown=30, probe_timeout=30, token="t1").decision  # 'allow'
    store.record("rates", "failure", token="", threshold=5)  # None: no transition yet
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Literal, cast

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

logger = logging.getLogger("resilient_flows.breaker")

StateName = Literal["closed", "open", "half_open"]
Outcome = Literal["success", "failure", "abandon"]
Decision = Literal["allow", "probe", "reject"]

KEY_PREFIX = "resilient-flows:breaker:"
STORE_RETRY_SECONDS = 5.0
SCRIPTS = files("toolkit") / "breaker_scripts"


@dataclass(frozen=True)
class BreakerState:
    name: str
    state: StateName
    failures: int
    opened_at: float | None  # Redis server time (epoch seconds) of the last move to open


@dataclass(frozen=True)
class Transition:
    """A state change, reported only to the process whose script made it."""

    name: str
    from_state: StateName
    to_state: StateName
    failures: int
    at: float  # Redis server time, epoch seconds


@dataclass(frozen=True)
class Acquired:
    """What acquire.lua decided for one caller."""

    decision: Decision
    state: StateName
    retry_in: float  # for a rejection: seconds until a probe may be tried
    transition: Transition | None


def script_source(name: str) -> str:
    """The Lua of script `name` (`acquire`, `record`, `reset`), after the clock it reads."""
    return (SCRIPTS / "clock.lua").read_text() + (SCRIPTS / f"{name}.lua").read_text()


def transition_of(
    name: str, from_state: str, to_state: str, failures: object, stamp: str
) -> Transition | None:
    """A script's reply as a `Transition`; None when its from_state is '' (nothing moved)."""
    if not from_state:
        return None
    return Transition(
        name,
        cast(StateName, from_state),
        cast(StateName, to_state),
        int(cast(int, failures)),
        float(stamp),
    )


class BreakerStore:
    """One Redis client and the breaker scripts registered on it, for every breaker of a URL."""

    def __init__(self, url: str) -> None:
        # One immediate retry (a pooled connection gone stale after a Redis restart), not the
        # redis-py default of 10 with backoff: that would hold a call for many socket timeouts
        # when Redis is unreachable, and the breaker lets calls through then anyway.
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 1),
            decode_responses=True,
        )
        # Registering only hashes the text: nothing reaches Redis until a script runs.
        self._acquire: Script = self.client.register_script(script_source("acquire"))
        self._record: Script = self.client.register_script(script_source("record"))
        self._reset: Script = self.client.register_script(script_source("reset"))
        self.down_until = 0.0  # monotonic; while in the future, callers skip Redis

    def acquire(self, name: str, cooldown: float, probe_timeout: float, token: str) -> Acquired:
        decision, state, failures, retry_in, from_state, stamp = self._acquire(
            keys=[KEY_PREFIX + name], args=[cooldown, probe_timeout, token]
        )
        return Acquired(
            decision,
            state,
            float(retry_in),
            transition_of(name, from_state, state, failures, stamp),
        )

    def record(self, name: str, outcome: Outcome, token: str, threshold: int) -> Transition | None:
        """Count a call's outcome; `token` is '' for a call let through while closed."""
        state, failures, from_state, stamp = self._record(
            keys=[KEY_PREFIX + name], args=[outcome, token, threshold]
        )
        return transition_of(name, from_state, state, failures, stamp)

    def reset(self, name: str) -> Transition | None:
        state, failures, from_state, stamp = self._reset(keys=[KEY_PREFIX + name])
        return transition_of(name, from_state, state, failures, stamp)

    def read(self, name: str) -> BreakerState:
        raw_state, failures, opened_at = self.client.hmget(
            KEY_PREFIX + name, ["state", "failures", "opened_at"]
        )
        return BreakerState(
            name=name,
            state=cast(StateName, raw_state or "closed"),
            failures=int(failures or 0),
            opened_at=float(opened_at) if opened_at else None,
        )

    def available(self) -> bool:
        return time.monotonic() >= self.down_until

    def failed(self, name: str, exc: Exception) -> None:
        """Redis did not answer: skip it for `STORE_RETRY_SECONDS`, so an unreachable Redis
        costs one timeout, not one per call."""
        self.down_until = time.monotonic() + STORE_RETRY_SECONDS
        logger.warning(
            "Circuit breaker %r cannot reach Redis (%s): letting calls through unguarded "
            "for the next %.0fs",
            name,
            exc,
            STORE_RETRY_SECONDS,
        )


@functools.cache
def store_for(url: str) -> BreakerStore:
    """This process's store for Redis `url`, created on first use (never at import).

    Two threads asking at the same first moment may each build one, and one is kept: harmless,
    since the state they would share is in Redis, not in the store.
    """
    return BreakerStore(url)
