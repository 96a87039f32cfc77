"""toolkit/breaker_announce.py: what each transition says (unit tests), and a trip inside a
flow that reaches the session's real Prefect server as exactly one event, the Variable and
one alert."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from sandbox.server import Sandbox
from tests.helpers.logs import logged
from tests.helpers.polling import poll_until
from toolkit.breaker import CircuitBreaker, CircuitOpenError
from toolkit.breaker_announce import (
    MAX_VARIABLE_NAME_LENGTH,
    alert_of,
    event_of,
    variable_name,
    variable_value,
)
from toolkit.breaker_store import Transition
from toolkit.retry import checked, is_transient

AT = datetime(2026, 3, 1, 12, 30, 15, 250000, tzinfo=UTC).timestamp()


# -- what is said --------------------------------------------------------------------------------


def test_the_event_names_the_new_state_and_the_breaker() -> None:
    assert event_of(Transition("rates:http://x", "open", "half_open", 5, AT)) == {
        "event": "resilient-flows.circuit-breaker.half_open",
        "resource": {
            "prefect.resource.id": "resilient-flows.circuit-breaker.rates:http://x",
            "prefect.resource.name": "rates:http://x",
        },
        "payload": {"from": "open", "to": "half_open", "failures": 5},
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("rates", "circuit_breaker_rates"),
        ("Rates.API", "circuit_breaker_rates_api"),
        ("rates:http://127.0.0.1:8000", "circuit_breaker_rates_http___127_0_0_1_8000"),
    ],
)
def test_the_variable_name_is_one_prefect_accepts(name: str, expected: str) -> None:
    assert variable_name(name) == expected


def test_a_long_name_is_cut_to_prefects_limit() -> None:
    assert variable_name("x" * 400) == ("circuit_breaker_" + "x" * 400)[:MAX_VARIABLE_NAME_LENGTH]
    assert len(variable_name("x" * 400)) == MAX_VARIABLE_NAME_LENGTH == 255


def test_the_variable_holds_the_state_on_redis_clock_in_utc() -> None:
    assert variable_value(Transition("rates", "closed", "open", 5, AT)) == {
        "state": "open",
        "failures": 5,
        "changed_at": "2026-03-01T12:30:15.250000+00:00",
    }


def test_only_a_move_to_open_alerts_and_it_says_why() -> None:
    assert alert_of(Transition("rates", "closed", "open", 5, AT)) == (
        "Circuit breaker rates opened",
        "Upstream 'rates': breaker moved closed -> open after 5 consecutive transient "
        "failures; calls fail fast until a probe succeeds.",
    )
    reopened = alert_of(Transition("rates", "half_open", "open", 6, AT))
    assert reopened is not None and "after its probe failed;" in reopened[1]
    for to_state in ("half_open", "closed"):
        assert alert_of(Transition("rates", "open", to_state, 5, AT)) is None  # type: ignore[arg-type]


# -- what reaches Prefect ------------------------------------------------------------------------


def test_trip_inside_a_flow_emits_one_event_sets_the_variable_and_alerts(
    prefect_server: str, sandbox: Sandbox
) -> None:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.variables import Variable

    name = f"test-{uuid.uuid4().hex[:12]}"  # its Redis hash goes with the next sandbox's flush
    sandbox.set_faults("rates", error_rate=1.0)
    breaker = CircuitBreaker(name, failure_threshold=3, cooldown_seconds=60)  # announce: default
    primary = sandbox.urls["rates"] + "/rates?base=EUR"
    fallback = sandbox.urls["rates_fallback"] + "/rates?base=EUR"

    @task(cache_policy=NO_CACHE)  # an httpx.Client argument cannot be hashed
    def eur_rates(client: httpx.Client) -> str:
        try:
            breaker.call(lambda: checked(client.get(primary)))
            return "primary"
        except CircuitOpenError:
            pass  # open: straight to the fallback
        except httpx.HTTPStatusError as exc:
            if not is_transient(exc):
                raise
        checked(client.get(fallback))
        return "fallback"

    @flow
    def rates_with_breaker(n: int) -> list[str]:
        with httpx.Client(timeout=5) as client:
            return [eur_rates(client) for _ in range(n)]

    with logged("resilient_flows.alerts") as alerts:
        sources = rates_with_breaker(8)

    assert sources == ["fallback"] * 8
    assert (
        sandbox.counters()["rates"]["requests"] == 3
        and sandbox.counters()["rates_fallback"]["requests"] == 8
    )
    assert [r.getMessage() for r in alerts if name in r.getMessage()] == [
        f"ALERT Circuit breaker {name} opened: Upstream {name!r}: breaker moved closed -> open "
        "after 3 consecutive transient failures; calls fail fast until a probe succeeds."
    ]

    try:
        shown = Variable.get(variable_name(name))
        assert isinstance(shown, dict) and (shown["state"], shown["failures"]) == ("open", 3)
        changed_at = datetime.fromisoformat(shown["changed_at"])
        opened_at = breaker.state().opened_at
        assert opened_at is not None and abs(changed_at.timestamp() - opened_at) < 0.001

        with get_client(sync_client=True) as client:

            def read_events() -> list[Any]:
                # A new filter each time: its default `until` is the moment it is built.
                # limit=50: the server's maximum (the client's default of 100 gets a 422).
                event_filter = EventFilter(
                    event=EventNameFilter(prefix=["resilient-flows.circuit-breaker."]),
                    resource=EventResourceFilter(id=[f"resilient-flows.circuit-breaker.{name}"]),
                )
                return client.read_events(filter=event_filter, limit=50).events

            poll_until(read_events, timeout=10, interval=0.3, what="the breaker's event")
            time.sleep(1.0)  # room for a duplicate to arrive, if one had been sent
            events = read_events()
        assert len(events) == 1, events
        event = events[0]
        assert event.event == "resilient-flows.circuit-breaker.open"
        assert event.resource.get("prefect.resource.name") == name
        assert event.payload == {"from": "closed", "to": "open", "failures": 3}
        # Emitted inside a task run: Prefect ties it to the flow run it happened in.
        assert any(r.id.startswith("prefect.flow-run.") for r in event.related)
    finally:
        Variable.unset(variable_name(name))
