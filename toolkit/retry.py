"""Retry only what is worth retrying.

Scenario: an upstream answers 503, drops a connection, times out, or asks the caller to slow
down with 429 and Retry-After; it also answers 404 or 422 when the request itself is wrong.
Retrying the first kind is how a flow survives; retrying the second only repeats a mistake,
hammers the service and hides the error.

Solution: one classification of failures (`is_transient`) and, built on it:
- `UPSTREAM_RETRY`, the keyword arguments for Prefect's own task retries: exponential backoff
  with jitter, and a `retry_condition_fn` that refuses to retry a permanent error and waits
  out a 429's Retry-After before Prefect's backoff starts;
- `call_with_retries`, the same policy for code that is not a task (a flow's state hook, a
  CLI), with `backoff_delays`; `call_upstream`, that policy with the settings' counts, for
  calls too frequent to be a task run each (ledger_sync's pages and batches);
- `end_run_unless_transient`, for a flow's top level: a transient failure is re-raised so
  Prefect's flow retries resume the run from its checkpoints; a permanent one ends the run
  as Failed at once (Prefect has no retry condition for flows: see `spend_flow_retries`);
- `describe_failure`, the one line that names a failure in logs, reports and errors.

How to use:
    @task(**UPSTREAM_RETRY)
    def fetch(client: httpx.Client) -> dict:
        return checked(client.get("/things")).json()
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_logger, get_run_logger
from prefect.states import Failed, State
from prefect.tasks import exponential_backoff

R = TypeVar("R")

TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 60.0
"""A Retry-After longer than this is capped: the task's own retries then wait the rest."""


class TransientError(Exception):
    """A failure of the flow's own making that a later attempt may not meet."""


def is_transient(exc: BaseException) -> bool:
    """True for timeouts, transport errors, 429, 5xx and `TransientError`; false otherwise."""
    if isinstance(exc, TransientError | httpx.TimeoutException | httpx.TransportError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in TRANSIENT_STATUS
    return False


def checked(response: httpx.Response) -> httpx.Response:
    """The response if it is a success, else the `httpx.HTTPStatusError` it stands for."""
    response.raise_for_status()
    return response


def retry_after_seconds(exc: BaseException) -> float:
    """The delay a 429 (or 503) asked for in its Retry-After header, in seconds; 0 if none."""
    if not isinstance(exc, httpx.HTTPStatusError):
        return 0.0
    value = exc.response.headers.get("Retry-After", "").strip()
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)  # the HTTP-date form
        seconds = when.timestamp() - time.time() if when else 0.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a transient failure only, after its Retry-After.

    Prefect calls it only when a retry is left, so the wait happens only before a retry.
    """
    exc = state.result(raise_on_failure=False)
    if not (isinstance(exc, BaseException) and is_transient(exc)):
        return False
    time.sleep(retry_after_seconds(exc))
    return True


def upstream_retry_options() -> dict[str, Any]:
    """Prefect task retries for an upstream call, from the settings (toolkit/config.py), read
    afresh: not the cached `settings()`, which importing this module must not prime."""
    from toolkit.config import Settings

    tunables = Settings()
    return {
        "retries": tunables.upstream_retries,
        "retry_delay_seconds": exponential_backoff(
            backoff_factor=tunables.upstream_backoff_seconds
        ),
        "retry_jitter_factor": 0.5,
        "retry_condition_fn": retry_if_transient,
    }


def flow_retry_options() -> dict[str, Any]:
    """Prefect flow retries of a run that failed transiently, from the settings (read afresh)."""
    from toolkit.config import Settings

    tunables = Settings()
    return {
        "retries": tunables.flow_retries,
        "retry_delay_seconds": tunables.flow_retry_delay_seconds,
    }


# Prefect fixes a task's retries when it is decorated: read once, at first import.
UPSTREAM_RETRY: dict[str, Any] = upstream_retry_options()


def backoff_delays(first: float, cap: float, jitter: float = 0.5) -> Iterator[float]:
    """first, 2 x first, 4 x first ... each stretched by up to `jitter` of itself, at most cap."""
    delay = first
    while True:
        yield min(delay * (1 + random.uniform(0, jitter)), cap)
        delay = min(delay * 2, cap)


def call_with_retries(
    call: Callable[[], R],
    attempts: int,
    first_delay: float = 0.25,
    max_delay: float = 10.0,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> R:
    """`call()`, again after a transient failure (at most `attempts` in all), never after a
    permanent one; each wait is the backoff or the Retry-After asked for, whichever is longer.

    `on_retry(attempt, error, wait)` is told before each wait (to log it). The last failure is
    raised as it is: the caller tells a permanent refusal from exhausted attempts with
    `is_transient`.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    delays = backoff_delays(first_delay, max_delay)
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            wait = min(max(next(delays), retry_after_seconds(exc)), max_delay)
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")


def describe_failure(exc: BaseException) -> str:
    """One line for a failure: an HTTP error's status and the upstream's reason (the contract's
    `error`, else the start of its body), else the exception's type and message. Never an HTTP
    error's own text: it names the URL, and webhook URLs often carry a token."""
    if not isinstance(exc, httpx.HTTPStatusError):
        message = str(exc)
        return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    response = exc.response
    try:
        body = response.json()
        reason = body.get("error") if isinstance(body, dict) else None
    except ValueError:
        reason = None
    reason = reason or response.text[:200].strip()
    return f"HTTP {response.status_code}: {reason}" if reason else f"HTTP {response.status_code}"


def call_upstream(call: Callable[[], R], what: str) -> R:
    """`call()` under the upstream retry policy of the settings, outside any task.

    The same attempts, backoff, Retry-After and transient-only classification as
    `upstream_retry_options`, for a call made too often to be a task run of its own: each
    task run costs the Prefect server more CPU than a page of records costs the flow
    (README, "Benchmark"). Each retry is logged to the run's log, naming `what` failed.
    """
    from toolkit.config import settings

    tunables = settings()

    def log_retry(attempt: int, exc: BaseException, wait: float) -> None:
        try:
            logger = get_run_logger()
        except MissingContextError:  # outside a run: the module's own logger
            logger = get_logger(__name__)
        logger.info(
            "%s failed (%s): retry %d/%d in %.2f s",
            what,
            describe_failure(exc),
            attempt,
            tunables.upstream_retries,
            wait,
        )

    return call_with_retries(
        call,
        attempts=tunables.upstream_retries + 1,
        first_delay=tunables.upstream_backoff_seconds,
        max_delay=MAX_RETRY_AFTER_SECONDS,
        on_retry=log_retry,
    )


def end_run_unless_transient(exc: Exception) -> State:
    """Re-raise a transient failure (flow retries apply); turn a permanent one into Failed."""
    if is_transient(exc):
        raise exc
    spend_flow_retries()
    return Failed(message=f"{type(exc).__name__}: {exc} (permanent: not retried)", data=exc)


def spend_flow_retries() -> None:
    """Tell the server this flow run has no retries left.

    Prefect's server retries any flow run that proposes Failed while retries remain, whether
    the flow raised or returned the state (`RetryFailedFlows` in
    prefect/server/orchestration/core_policy.py, 3.9.1), and flows take no retry condition;
    the run's own policy is the one lever. `prefect flow-run retry` still works afterwards.
    tests/toolkit/test_retry.py pins that behaviour: when Prefect stops retrying a returned
    failure, that test fails, and this function can go.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    policy = context.flow_run.empirical_policy.model_copy(update={"retries": 0, "max_retries": 0})
    with get_client(sync_client=True) as client:
        client.update_flow_run(context.flow_run.id, empirical_policy=policy)
