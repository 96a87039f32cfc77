"""Circuit breaker: stop calling a service that is down, for every run and worker at once.

Scenario
    A service is down for minutes. Every run that calls it retries with backoff: together
    they hammer it when it tries to come back, and each wastes its retry budget waiting.

Solution
    Each call goes through `toolkit.breaker`, a breaker keyed by the service's URL whose
    state lives in Redis, shared by every task, flow run and worker. After a number of
    consecutive transient failures it opens: calls fail at once with `CircuitOpenError`
    (not retried), without a request. After a cooldown one probe is let through; its
    outcome closes or reopens the breaker. Transitions are Prefect events
    (`resilient-flows.circuit-breaker.*`), the state is a Prefect Variable
    (`circuit_breaker_<name>`) shown in the UI, and opening sends an alert.

How to run
    python -c "from flows.circuit_breaker import circuit_breaker; print(circuit_breaker(calls=20))"
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import BaseModel, Field

from flows.transient_retry import get_json
from toolkit.breaker import CircuitOpenError, breaker_for
from toolkit.services import load_service


class BreakerTally(BaseModel):
    succeeded: int = 0
    failed: int = 0
    rejected_by_breaker: int = 0
    state: str = ""


@flow(name="circuit-breaker")
def circuit_breaker(
    service: str = "sandbox-rates",
    path: str = "/rates?base=EUR",
    calls: Annotated[int, Field(ge=1, le=1000)] = 10,
) -> BreakerTally:
    """Call a service `calls` times through its shared circuit breaker and tally the outcomes.

    Args:
      service: Name of the HttpService block document of the service to call; its breaker
        is shared by every run that calls the same URL.

      path: Path and query to GET from that service, e.g. `/rates?base=EUR`.

      calls: How many calls to make, from 1 to 1000.
    """
    upstream = load_service("service", service)
    name = f"service:{upstream.base_url}"
    tally = BreakerTally()
    with upstream.client() as client:
        for _ in range(calls):
            try:
                get_json(client, path, breaker=name)
                tally.succeeded += 1
            except CircuitOpenError:
                tally.rejected_by_breaker += 1
            except Exception:
                tally.failed += 1
    tally.state = breaker_for(name).state().state
    return tally
