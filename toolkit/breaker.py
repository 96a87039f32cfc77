"""A circuit breaker per upstream, shared by every task, flow run and worker through Redis.

Scenario: the rates service goes down. Every task that needs it still tries it, each try waits
out its own timeouts and retries, and the retries of all the workers together keep hammering a
service that is trying to come back. The flows should notice once, stop calling it for a
while, go to the fallback at once, and let exactly one caller find out whether it is back.

Solution: one Redis hash per upstream (`resilient-flows:breaker:{name}`) holds the breaker:
closed (calls pass; consecutive transient failures are counted), open (calls are rejected with
`CircuitOpenError` without touching the upstream, until the cooldown has passed) and half_open
(one caller, holding a probe token, is let through; its outcome closes or reopens the breaker).
What counts as a failure is `toolkit.retry.is_transient` (`outcome_of`): timeouts, transport
errors, 429 and 5xx. A permanent error such as 404 means the service answered: a success.

Every decision and every transition is a Lua script (`toolkit/breaker_store.py`) run
atomically by Redis on Redis's own clock (`TIME`), so workers on several machines agree on
when a cooldown ends. That is why this is home-made rather than pybreaker: pybreaker's Redis
storage shares the counters but decides transitions in each process from what it reads, so two
workers can both see an elapsed cooldown, both move open -> half_open and both probe (and both
report it). Here the script that makes a transition returns it to its one caller only: exactly
one caller wins the probe and exactly one process announces each transition
(`toolkit/breaker_announce.py`: a Prefect event, a Prefect Variable, on opening an alert). A
probe holder that dies keeps the probe only until `probe_timeout_seconds` has passed.

If Redis cannot be reached the breaker lets every call through and logs a warning: a breaker
that cannot see its store must not stop the work. After a store error it does not ask Redis
again for `STORE_RETRY_SECONDS`, so an unreachable Redis costs one timeout, not one per call.

`breaker_for(name)` is this process's breaker per name, configured from `toolkit.config.settings()`
(`RESILIENT_FLOWS_REDIS_URL`, `RESILIENT_FLOWS_BREAKER_FAILURE_THRESHOLD`,
`RESILIENT_FLOWS_BREAKER_COOLDOWN_SECONDS`) on first use; `breaker_for.cache_clear()` forgets
them. `CircuitOpenError` is not transient for `is_transient`, so `UPSTREAM_RETRY` never retries it.

How to run (`primary` and `fallback` are `httpx.Client`s of two rates services):
    import httpx

    from toolkit.breaker import CircuitOpenError, breaker_for
    from toolkit.retry import checked

    def eur_rates(client: httpx.Client) -> dict:
        return checked(client.get("/rates", params={"base": "EUR"})).json()

    try:
        rates = breaker_for("rates").call(eur_rates, primary)  # its errors come out unchanged
    except CircuitOpenError:
        rates = eur_rates(fallback)  # open: straight to the fallback, no request, no retry
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import redis

from toolkit.breaker_announce import announce, variable_name
from toolkit.breaker_store import (
    KEY_PREFIX,
    STORE_RETRY_SECONDS,
    BreakerState,
    BreakerStore,
    Outcome,
    StateName,
    Transition,
    store_for,
)
from toolkit.config import settings
from toolkit.retry import is_transient

# What the breaker's users import from here (tests/, flows/): the breaker is one API.
__all__ = [
    "KEY_PREFIX",
    "STORE_RETRY_SECONDS",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "StateName",
    "Transition",
    "announce",
    "breaker_for",
    "outcome_of",
    "variable_name",
]

logger = logging.getLogger("resilient_flows.breaker")

P = ParamSpec("P")
T = TypeVar("T")

MIN_PROBE_TIMEOUT_SECONDS = 30.0


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


def outcome_of(exc: BaseException | None) -> Outcome:
    """What a call that raised `exc` (None: returned) says about the upstream."""
    if exc is None:
        return "success"
    if not isinstance(exc, Exception):
        return "abandon"  # interrupted (KeyboardInterrupt, cancellation): no verdict
    # A permanent error (404, 422) means the upstream answered: it is up.
    return "failure" if is_transient(exc) else "success"


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

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.name!r}, failure_threshold={self.failure_threshold}, "
            f"cooldown_seconds={self.cooldown_seconds})"
        )

    @property
    def _store(self) -> BreakerStore:
        return store_for(self.redis_url)  # created on first use, never at import

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` if the breaker allows it, else `CircuitOpenError`.

        fn's own exception is re-raised unchanged after its outcome is recorded.
        """
        ticket = self._acquire()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._record(ticket, outcome_of(exc))
            raise
        self._record(ticket, outcome_of(None))
        return result

    def state(self) -> BreakerState:
        """The stored state (raises `redis.RedisError` if Redis cannot be reached).

        An open breaker whose cooldown has passed still reads "open" until a caller probes.
        """
        return self._store.read(self.name)

    def reset(self) -> None:
        """Close the breaker and forget its failures (an operator's decision).

        A probe in flight is disowned: its result will not change the state. If the breaker
        was not closed this is reported as a transition to closed, so the UI variable follows.
        """
        self._report(self._store.reset(self.name))

    # -- internals --------------------------------------------------------------------------

    def _acquire(self) -> str | None:
        """'' to call while closed, a probe token to probe, None if Redis cannot be reached."""
        store = self._store
        if not store.available():
            return None
        token = uuid.uuid4().hex
        try:
            acquired = store.acquire(
                self.name, self.cooldown_seconds, self.probe_timeout_seconds, token
            )
        except redis.RedisError as exc:
            store.failed(self.name, exc)
            return None
        self._report(acquired.transition)
        if acquired.decision == "reject":
            raise CircuitOpenError(self.name, acquired.retry_in, acquired.state)
        return token if acquired.decision == "probe" else ""

    def _record(self, ticket: str | None, outcome: Outcome) -> None:
        # Unguarded calls have nothing to record; nor has an interrupted call let through while
        # closed (no probe to free).
        if ticket is None or (ticket == "" and outcome == "abandon"):
            return
        store = self._store
        try:
            transition = store.record(self.name, outcome, ticket, self.failure_threshold)
        except redis.RedisError as exc:
            # Unrecorded: a probe's token simply expires after probe_timeout_seconds.
            store.failed(self.name, exc)
            return
        self._report(transition)

    def _report(self, transition: Transition | None) -> None:
        if transition is None:
            return
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


@functools.cache
def breaker_for(name: str) -> CircuitBreaker:
    """This process's breaker for upstream `name`, configured from `settings()` on first use.

    Two threads asking at the same first moment may each build one, and one is kept: harmless,
    since every breaker of a name shares the one state in Redis.
    """
    return CircuitBreaker(name)
