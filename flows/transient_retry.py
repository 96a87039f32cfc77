"""Transient-only retries: retry a 503, never a 404.

Scenario
    An upstream answers 503 or 429, drops the connection or times out now and then, and
    answers 404 when asked for something that does not exist. The first kind deserves a
    retry with backoff (after the Retry-After a 429 asks for); the second must fail at once.

Solution
    A task with Prefect's retries configured by `toolkit.retry.UPSTREAM_RETRY`: exponential
    backoff with jitter, and a `retry_condition_fn` built on the one classification of
    failures (`is_transient`) every flow of the project uses. The optional circuit breaker
    name makes the same task the unit of flows/circuit_breaker.py.

How to run
    python -c "from flows.transient_retry import transient_retry; print(transient_retry())"
"""

from __future__ import annotations

from typing import Any

import httpx
from prefect import flow, task

from flows.ledger.upstreams import UPSTREAM_TASK
from toolkit.breaker import breaker_for
from toolkit.retry import checked
from toolkit.services import load_service


@task(**UPSTREAM_TASK, task_run_name="get-{path}")
def get_json(client: httpx.Client, path: str, breaker: str | None = None) -> Any:
    """GET `path`; through the named circuit breaker if one is given."""
    if breaker is None:
        return checked(client.get(path)).json()
    return breaker_for(breaker).call(lambda: checked(client.get(path))).json()


@flow(name="transient-retry")
def transient_retry(
    service: str = "sandbox-rates",
    path: str = "/rates?base=EUR",
) -> Any:
    """GET one resource, retrying transient failures only.

    Args:
      service: Name of the HttpService block document of the service to call.

      path: Path and query to GET from that service, e.g. `/rates?base=EUR`.
    """
    with load_service("service", service).client() as client:
        return get_json(client, path)
