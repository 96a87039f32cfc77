"""A circuit breaker per upstream, shared by every task, flow run and worker through Redis.

Scenario: the rates service goes down. Every task that needs it still tries it, each try waits
out its own timeouts and retries, and the retries of all the workers together keep hammering a
service that is trying to come back. The flows should notice once, stop calling it for a
while, go to the fallback at once, and let exactly one caller find out whether it is back.

Solution: one Redis hash per upstream (`resilient-flows:breaker:{name}`) holds the breaker:
closed (calls pass; consecutive transient failures are counted), open (calls are rejected with
`CircuitOpenError` without touching the upstream, until the cooldown has passed) and half_open
(one caller, holding a probe token, is let through; its outcome closes or reopens the breaker).
What counts as a failure is `toolkit.retry.is_transient`: timeouts, transport errors, 429 and
5xx. A permanent error such as 404 means the service answered, so it counts as a success.

Every decision and every transition is one Lua script run atomically by Redis on Redis's own
clock (`TIME`), so workers on several machines agree on when a cooldown ends. That is why this
is a home-made script rather than pybreaker: pybreaker's Redis storage shares the counters but
decides transitions in each process from what it reads, so two workers can both see an elapsed
cooldown, both move open -> half_open and both probe (and both report it). Here the script that
makes a transition returns it to its one caller only: exactly one caller wins the probe and
exactly one process emits the event for each transition. A probe holder that dies keeps the
probe only until `probe_timeout_seconds` has passed; then another caller may probe.

The process that learns of a transition announces it (`announce`, best effort: a failure is
logged, never raised into the caller's call): a Prefect event
`resilient-flows.circuit-breaker.{open|half_open|closed}`, a Prefect Variable
`circuit_breaker_{name}` with the current state for the UI, and on every move to open an alert
through `toolkit.alerts.alert`. These run in the caller's thread, once per transition. The
Redis hash (`CircuitBreaker.state()`) is the truth; the Variable is a view of it that two
transitions made moments apart by two processes could write out of order.

If Redis cannot be reached the breaker lets every call through and logs a warning: a breaker
that cannot see its store must not stop the work. After a store error it does not ask Redis
again for `STORE_RETRY_SECONDS`, so an unreachable Redis costs one timeout, not one per call.

How to use:
    from toolkit.breaker import CircuitOpenError, breaker_for

    try:
        rates = breaker_for("rates").call(fetch_rates, client, "EUR")
    except CircuitOpenError:
        rates = fetch_rates(fallback_client, "EUR")  # open: go to the fallback now, no retry

`CircuitOpenError` is not transient for `is_transient`, so `UPSTREAM_RETRY` does not retry it.
Defaults come from `toolkit.config.settings()` (`RESILIENT_FLOWS_REDIS_URL`,
`RESILIENT_FLOWS_BREAKER_FAILURE_THRESHOLD`, `RESILIENT_FLOWS_BREAKER_COOLDOWN_SECONDS`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, ParamSpec, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from toolkit.alerts import alert
from toolkit.config import settings
from toolkit.retry import is_transient

logger = logging.getLogger("resilient_flows.breaker")

P = ParamSpec("P")
T = TypeVar("T")

StateName = Literal["closed", "open", "half_open"]

KEY_PREFIX = "resilient-flows:breaker:"
STORE_RETRY_SECONDS = 5.0
MIN_PROBE_TIMEOUT_SECONDS = 30.0
MAX_VARIABLE_NAME_LENGTH = 255  # prefect.types.MAX_VARIABLE_NAME_LENGTH

# Lua shared by the scripts: Redis's clock, so every machine agrees on when a cooldown ends.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS[1] breaker hash; ARGV: cooldown, probe timeout, the caller's token.
# Returns {decision, state, failures, retry_in, from_state, now}; decision is allow | probe |
# reject; from_state is '' unless this call made a transition (only open -> half_open here).
# Floats travel as strings: Redis truncates Lua numbers to integers.
_ACQUIRE = (
    _NOW
    + """
local key = KEYS[1]
local cooldown = tonumber(ARGV[1])
local probe_timeout = tonumber(ARGV[2])
local h = redis.call('HMGET', key, 'state', 'failures', 'opened_at', 'probe_deadline')
local state = h[1] or 'closed'
local failures = tonumber(h[2]) or 0
local stamp = string.format('%.6f', now)
if state == 'closed' then
    return {'allow', state, failures, '0', '', stamp}
end
if state == 'open' then
    local wait = (tonumber(h[3]) or now) + cooldown - now
    if wait > 0 then
        return {'reject', state, failures, string.format('%.6f', wait), '', stamp}
    end
    redis.call('HSET', key, 'state', 'half_open', 'probe_token', ARGV[3],
        'probe_deadline', string.format('%.6f', now + probe_timeout), 'changed_at', stamp)
    return {'probe', 'half_open', failures, '0', 'open', stamp}
end
-- half_open: the probe belongs to its holder until its deadline (the holder may have died).
local deadline = tonumber(h[4]) or 0
if now < deadline then
    return {'reject', state, failures, string.format('%.6f', deadline - now), '', stamp}
end
redis.call('HSET', key, 'probe_token', ARGV[3],
    'probe_deadline', string.format('%.6f', now + probe_timeout))
return {'probe', state, failures, '0', '', stamp}
"""
)

# KEYS[1] breaker hash; ARGV: outcome (success | failure | abandon), the caller's probe token
# ('' for a call let through while closed), failure threshold.
# Returns {state, failures, from_state, now}; from_state is '' unless this call made a
# transition (closed -> open, half_open -> closed, half_open -> open).
_RECORD = (
    _NOW
    + """
local key = KEYS[1]
local outcome = ARGV[1]
local token = ARGV[2]
local threshold = tonumber(ARGV[3])
local h = redis.call('HMGET', key, 'state', 'failures', 'probe_token')
local state = h[1] or 'closed'
local failures = tonumber(h[2]) or 0
local stamp = string.format('%.6f', now)
if token ~= '' then
    -- A probe's outcome counts only while it is still the probe: a holder whose deadline
    -- passed and whose probe went to someone else (or a reset) must not change the state.
    if state ~= 'half_open' or h[3] ~= token then
        return {state, failures, '', stamp}
    end
    if outcome == 'success' then
        redis.call('HSET', key, 'state', 'closed', 'failures', 0, 'changed_at', stamp)
        redis.call('HDEL', key, 'opened_at', 'probe_token', 'probe_deadline')
        return {'closed', 0, 'half_open', stamp}
    end
    if outcome == 'abandon' then
        -- No verdict (the caller was interrupted): free the probe for the next caller now.
        redis.call('HSET', key, 'probe_deadline', 0)
        return {state, failures, '', stamp}
    end
    failures = failures + 1
    redis.call('HSET', key, 'state', 'open', 'failures', failures, 'opened_at', stamp,
        'changed_at', stamp)
    redis.call('HDEL', key, 'probe_token', 'probe_deadline')
    return {'open', failures, 'half_open', stamp}
end
-- Calls let through while closed that finish after the breaker left closed are stale news:
-- counting them would extend or end a cooldown some other caller started.
if state ~= 'closed' or outcome == 'abandon' then
    return {state, failures, '', stamp}
end
if outcome == 'success' then
    if failures ~= 0 then
        redis.call('HSET', key, 'failures', 0)
    end
    return {state, 0, '', stamp}
end
failures = redis.call('HINCRBY', key, 'failures', 1)
if failures >= threshold then
    redis.call('HSET', key, 'state', 'open', 'opened_at', stamp, 'changed_at', stamp)
    return {'open', failures, 'closed', stamp}
end
return {state, failures, '', stamp}
"""
)

# KEYS[1] breaker hash. Returns {previous state, previous failures, now}.
_RESET = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'failures')
redis.call('DEL', KEYS[1])
return {h[1] or 'closed', tonumber(h[2]) or 0, string.format('%.6f', now)}
"""
)


class CircuitOpenError(Exception):
    """The breaker rejected the call without running it: use the fallback now, do not retry.

    `retry_in` is how many seconds remain until a probe may be tried (for an open breaker, the
    rest of its cooldown; for a half-open one, the rest of the current probe's time).
    """

    def __init__(self, name: str, retry_in: float, state: str = "open") -> None:
        # All arguments go to Exception so the error pickles (Prefect persists task errors).
        super().__init__(name, retry_in, state)
        self.name = name
        self.retry_in = retry_in
        self.state = state

    def __str__(self) -> str:
        return (
            f"circuit breaker {self.name!r} is {self.state}: call rejected, "
            f"next probe possible in {self.retry_in:.1f}s"
        )


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


class _Store:
    """One Redis client and its registered scripts per URL, shared by the breakers using it."""

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
        self.acquire: Script = self.client.register_script(_ACQUIRE)
        self.record: Script = self.client.register_script(_RECORD)
        self.reset: Script = self.client.register_script(_RESET)
        self.down_until = 0.0  # monotonic; while in the future, calls skip Redis

    def available(self) -> bool:
        return time.monotonic() >= self.down_until

    def failed(self, name: str, exc: Exception) -> None:
        self.down_until = time.monotonic() + STORE_RETRY_SECONDS
        logger.warning(
            "Circuit breaker %r cannot reach Redis (%s): letting calls through unguarded "
            "for the next %.0fs",
            name,
            exc,
            STORE_RETRY_SECONDS,
        )


_stores: dict[str, _Store] = {}
_stores_lock = threading.Lock()


def _store_for(url: str) -> _Store:
    with _stores_lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = _Store(url)
        return store


def variable_name(name: str) -> str:
    """The Prefect Variable that shows breaker `name`'s state: lowercase, digits, underscores.

    Names differing only in case or punctuation ("rates-api", "Rates.API") share a variable.
    """
    return ("circuit_breaker_" + re.sub(r"[^a-z0-9_]", "_", name.lower()))[
        :MAX_VARIABLE_NAME_LENGTH
    ]


def announce(transition: Transition) -> None:
    """Default transition hook: Prefect event, Prefect Variable and, on opening, an alert.

    Each is best effort: logged if it fails, never raised into the call that tripped it.
    """
    from prefect.events import emit_event
    from prefect.variables import Variable

    t = transition
    try:
        emit_event(
            event=f"resilient-flows.circuit-breaker.{t.to_state}",
            resource={
                "prefect.resource.id": f"resilient-flows.circuit-breaker.{t.name}",
                "prefect.resource.name": t.name,
            },
            payload={"from": t.from_state, "to": t.to_state, "failures": t.failures},
        )
    except Exception:
        logger.warning("Circuit breaker %r: event not emitted", t.name, exc_info=True)
    try:
        value = {
            "state": t.to_state,
            "failures": t.failures,
            "changed_at": datetime.fromtimestamp(t.at, UTC).isoformat(),
        }
        # _sync: the sync client even when called from an async task, which would otherwise
        # get an un-awaited coroutine back.
        set_variable: Any = Variable.set
        set_variable(variable_name(t.name), value, overwrite=True, _sync=True)
    except Exception:
        logger.warning("Circuit breaker %r: variable not updated", t.name, exc_info=True)
    if t.to_state == "open":
        try:
            why = (
                "its probe failed"
                if t.from_state == "half_open"
                else f"{t.failures} consecutive transient failures"
            )
            alert(
                f"Circuit breaker {t.name} opened",
                f"Upstream {t.name!r}: breaker moved {t.from_state} -> open after {why}; "
                "calls fail fast until a probe succeeds.",
            )
        except Exception:
            logger.warning("Circuit breaker %r: alert not sent", t.name, exc_info=True)


class CircuitBreaker:
    """A breaker for upstream `name`; every instance with the same name shares one state."""

    def __init__(
        self,
        name: str,
        failure_threshold: int | None = None,
        cooldown_seconds: float | None = None,
        probe_timeout_seconds: float | None = None,
        redis_url: str | None = None,
        *,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        """`on_transition` replaces `announce` as what runs when this process makes a
        transition (tests count transitions with it; pass a function calling `announce` too
        to keep the events)."""
        config = settings()
        self.name = name
        self.failure_threshold = (
            config.breaker_failure_threshold if failure_threshold is None else failure_threshold
        )
        self.cooldown_seconds = (
            config.breaker_cooldown_seconds if cooldown_seconds is None else cooldown_seconds
        )
        # Long enough for a real request to finish, so a slow probe is not taken over.
        self.probe_timeout_seconds = (
            max(self.cooldown_seconds, MIN_PROBE_TIMEOUT_SECONDS)
            if probe_timeout_seconds is None
            else probe_timeout_seconds
        )
        self.redis_url = config.redis_url if redis_url is None else redis_url
        self.key = KEY_PREFIX + name
        self.on_transition = announce if on_transition is None else on_transition
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.cooldown_seconds <= 0 or self.probe_timeout_seconds <= 0:
            raise ValueError("cooldown_seconds and probe_timeout_seconds must be positive")
        self._store_obj: _Store | None = None  # created on first use, never at import

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.name!r}, failure_threshold={self.failure_threshold}, "
            f"cooldown_seconds={self.cooldown_seconds})"
        )

    @property
    def _store(self) -> _Store:
        if self._store_obj is None:
            self._store_obj = _store_for(self.redis_url)
        return self._store_obj

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` if the breaker allows it, else `CircuitOpenError`.

        fn's own exception is re-raised unchanged after its outcome is recorded.
        """
        ticket = self._acquire()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            self._record(ticket, "failure" if is_transient(exc) else "success")
            raise
        except BaseException:
            # Interrupted (KeyboardInterrupt, cancellation): no verdict on the upstream.
            self._record(ticket, "abandon")
            raise
        self._record(ticket, "success")
        return result

    def state(self) -> BreakerState:
        """The stored state (raises `redis.RedisError` if Redis cannot be reached).

        An open breaker whose cooldown has passed still reads "open" until a caller probes.
        """
        raw_state, failures, opened_at = self._store.client.hmget(
            self.key, ["state", "failures", "opened_at"]
        )
        return BreakerState(
            name=self.name,
            state=cast(StateName, raw_state or "closed"),
            failures=int(failures or 0),
            opened_at=float(opened_at) if opened_at else None,
        )

    def reset(self) -> None:
        """Close the breaker and forget its failures (an operator's decision).

        A probe in flight is disowned: its result will not change the state. If the breaker
        was not closed this is reported as a transition to closed, so the UI variable follows.
        """
        previous, failures, stamp = self._store.reset(keys=[self.key])
        if previous != "closed":
            self._report(previous, "closed", failures, stamp)

    # -- internals --------------------------------------------------------------------------

    def _acquire(self) -> str | None:
        """'' to call while closed, a probe token to probe, None if Redis cannot be reached."""
        store = self._store
        if not store.available():
            return None
        token = uuid.uuid4().hex
        try:
            decision, state, failures, retry_in, from_state, stamp = store.acquire(
                keys=[self.key],
                args=[self.cooldown_seconds, self.probe_timeout_seconds, token],
            )
        except redis.RedisError as exc:
            store.failed(self.name, exc)
            return None
        if from_state:
            self._report(from_state, state, failures, stamp)
        if decision == "reject":
            raise CircuitOpenError(self.name, float(retry_in), state)
        return token if decision == "probe" else ""

    def _record(self, ticket: str | None, outcome: str) -> None:
        if ticket is None or (ticket == "" and outcome == "abandon"):
            return
        store = self._store
        try:
            state, failures, from_state, stamp = store.record(
                keys=[self.key], args=[outcome, ticket, self.failure_threshold]
            )
        except redis.RedisError as exc:
            # Unrecorded: a probe's token simply expires after probe_timeout_seconds.
            store.failed(self.name, exc)
            return
        if from_state:
            self._report(from_state, state, failures, stamp)

    def _report(self, from_state: str, to_state: str, failures: object, stamp: str) -> None:
        transition = Transition(
            self.name,
            cast(StateName, from_state),
            cast(StateName, to_state),
            int(cast(int, failures)),
            float(stamp),
        )
        logger.info(
            "Circuit breaker %r: %s -> %s (%d failures)",
            transition.name,
            transition.from_state,
            transition.to_state,
            transition.failures,
        )
        try:
            self.on_transition(transition)
        except Exception:
            logger.warning("Circuit breaker %r: transition hook failed", self.name, exc_info=True)


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(name: str) -> CircuitBreaker:
    """This process's breaker for upstream `name`, configured from `settings()` on first use."""
    with _breakers_lock:
        breaker = _breakers.get(name)
        if breaker is None:
            breaker = _breakers[name] = CircuitBreaker(name)
        return breaker
