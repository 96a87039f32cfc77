"""flows/circuit_breaker.py: a down service is called threshold times, then never."""

from __future__ import annotations

import pytest

from sandbox.server import Sandbox

pytestmark = pytest.mark.usefixtures("sandbox_blocks")


def test_breaker_opens_and_spares_the_service(sandbox: Sandbox) -> None:
    from flows.circuit_breaker import circuit_breaker
    from toolkit.config import settings

    sandbox.set_faults("rates", error_rate=1.0)

    tally = circuit_breaker(calls=20)

    threshold = settings().breaker_failure_threshold
    assert sandbox.counters()["rates"]["requests"] == threshold
    # the first call's retries opened it, and its next attempt was already refused
    assert (tally.succeeded, tally.rejected_by_breaker, tally.state) == (0, 20, "open")


def test_a_healthy_service_keeps_the_breaker_closed(sandbox: Sandbox) -> None:
    from flows.circuit_breaker import circuit_breaker

    tally = circuit_breaker(calls=5)

    assert (tally.succeeded, tally.state) == (5, "closed")
    assert sandbox.counters()["rates"]["requests"] == 5
