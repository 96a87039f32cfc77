"""Retry only what is worth retrying.

Scenario: an upstream answers 503, drops a connection or times out now and then; it also
answers 404 or 422 when the request itself is wrong. Retrying the first kind is how a flow
survives; retrying the second only repeats a mistake and hides it.

Solution: one classification of upstream outcomes (`is_transient`) and, built on it, the
keyword arguments for Prefect's own task retries (`UPSTREAM_RETRY`): exponential backoff with
jitter, and a `retry_condition_fn` that refuses to retry a permanent error.

How to use:
    @task(**UPSTREAM_RETRY)
    def fetch(client: httpx.Client) -> dict:
        return checked(client.get("/things")).json()
"""

from __future__ import annotations

from typing import Any

import httpx
from prefect.tasks import exponential_backoff

TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """True for timeouts, transport errors, 429 and 5xx; false for any other error."""
    if isinstance(exc, httpx.TimeoutException | httpx.TransportError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in TRANSIENT_STATUS
    return False


def checked(response: httpx.Response) -> httpx.Response:
    """The response if it is a success, else the `httpx.HTTPStatusError` it stands for."""
    response.raise_for_status()
    return response


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry the failed attempt only if its error is transient."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


UPSTREAM_RETRY: dict[str, Any] = {
    "retries": 8,
    "retry_delay_seconds": exponential_backoff(backoff_factor=0.05),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_transient,
}
