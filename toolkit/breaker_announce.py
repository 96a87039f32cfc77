"""Telling people and the UI that a circuit breaker changed state.

Scenario: a breaker opens on one worker at 3 a.m. The operator should be paged once, the UI
should show which upstreams are cut off, and automations should be able to react, without any
of this ever failing the call that tripped the breaker.

Solution: `announce(transition)`, the default `on_transition` of `toolkit.breaker`, run once
per transition by the one process whose script made it, in the caller's thread. It sends:
- a Prefect event `resilient-flows.circuit-breaker.{open|half_open|closed}` (`event_of`);
- a Prefect Variable `circuit_breaker_{name}` holding the current state (`variable_name`,
  `variable_value`);
- on every move to open, an alert through `toolkit.alerts.alert` (`alert_of`).
The pure functions decide what is said; `announce` only sends it, each part best effort: a
failure is logged, never raised. The Redis hash (`CircuitBreaker.state()`) is the truth; the
Variable is a view of it that two transitions made moments apart by two processes could write
out of order.

How to run:
    announce(Transition("rates", "closed", "open", failures=5, at=time.time()))
    # with PREFECT_API_URL set: one event, the Variable circuit_breaker_rates, one alert
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from prefect.events import emit_event
from prefect.variables import Variable

from toolkit.alerts import alert
from toolkit.breaker_store import Transition

logger = logging.getLogger("resilient_flows.breaker")

EVENT_PREFIX = "resilient-flows.circuit-breaker."
MAX_VARIABLE_NAME_LENGTH = 255  # prefect.types.MAX_VARIABLE_NAME_LENGTH


def event_of(t: Transition) -> dict[str, Any]:
    """The keyword arguments of `prefect.events.emit_event` for `t`."""
    return {
        "event": EVENT_PREFIX + t.to_state,
        "resource": {
            "prefect.resource.id": EVENT_PREFIX + t.name,
            "prefect.resource.name": t.name,
        },
        "payload": {"from": t.from_state, "to": t.to_state, "failures": t.failures},
    }


def variable_name(name: str) -> str:
    """The Prefect Variable that shows breaker `name`'s state: lowercase, digits, underscores.

    Names differing only in case or punctuation ("rates-api", "Rates.API") share a variable.
    """
    return ("circuit_breaker_" + re.sub(r"[^a-z0-9_]", "_", name.lower()))[
        :MAX_VARIABLE_NAME_LENGTH
    ]


def variable_value(t: Transition) -> dict[str, Any]:
    """What the Variable holds after `t`; `changed_at` is Redis's clock, in UTC."""
    return {
        "state": t.to_state,
        "failures": t.failures,
        "changed_at": datetime.fromtimestamp(t.at, UTC).isoformat(),
    }


def alert_of(t: Transition) -> tuple[str, str] | None:
    """The alert's subject and body when `t` opens the breaker, else None."""
    if t.to_state != "open":
        return None
    why = (
        "its probe failed"
        if t.from_state == "half_open"
        else f"{t.failures} consecutive transient failures"
    )
    return (
        f"Circuit breaker {t.name} opened",
        f"Upstream {t.name!r}: breaker moved {t.from_state} -> open after {why}; "
        "calls fail fast until a probe succeeds.",
    )


def announce(t: Transition) -> None:
    """Event, Variable and (on opening) alert for `t`; each logged if it fails, never raised."""
    try:
        emit_event(**event_of(t))
    except Exception:
        logger.warning("Circuit breaker %r: event not emitted", t.name, exc_info=True)
    try:
        # _sync: the sync client even when called from an async task, which would otherwise
        # get an un-awaited coroutine back.
        set_variable: Any = Variable.set
        set_variable(variable_name(t.name), variable_value(t), overwrite=True, _sync=True)
    except Exception:
        logger.warning("Circuit breaker %r: variable not updated", t.name, exc_info=True)
    message = alert_of(t)
    if message is not None:
        try:
            alert(*message)
        except Exception:
            logger.warning("Circuit breaker %r: alert not sent", t.name, exc_info=True)
