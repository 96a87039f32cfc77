"""The classification every upstream task retries by (unit tests: no network)."""

from __future__ import annotations

import httpx
import pytest
from prefect.states import Failed

from tests.helpers.http import status_error
from toolkit.retry import is_transient, retry_if_transient


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_transient(status: int) -> None:
    assert is_transient(status_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_client_errors_are_permanent(status: int) -> None:
    assert not is_transient(status_error(status))


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("slow"),
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("dropped"),
    ],
)
def test_transport_failures_are_transient(exc: Exception) -> None:
    assert is_transient(exc)


def test_validation_errors_are_permanent() -> None:
    assert not is_transient(ValueError("amount: not a decimal"))


def test_retry_condition_reads_the_failed_state() -> None:
    assert retry_if_transient(None, None, Failed(data=status_error(503)))
    assert not retry_if_transient(None, None, Failed(data=status_error(404)))


def failing(*errors: BaseException):  # type: ignore[no-untyped-def]
    """A call that raises each of `errors` in turn, then returns "done"; and its call count."""
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "done"

    return call, calls


def test_transient_failures_are_retried_with_growing_waits() -> None:
    from toolkit.retry import call_with_retries

    call, calls = failing(status_error(503), httpx.ConnectError("refused"))
    waits: list[float] = []
    told: list[int] = []

    result = call_with_retries(
        call,
        3,
        first_delay=0.1,
        max_delay=10,
        on_retry=lambda n, e, w: told.append(n),
        sleep=waits.append,
    )

    assert result == "done" and len(calls) == 3 and told == [1, 2]
    assert 0.1 <= waits[0] <= 0.15 and 0.2 <= waits[1] <= 0.3


def test_a_permanent_failure_is_raised_at_once() -> None:
    from toolkit.retry import call_with_retries

    call, calls = failing(status_error(422))
    with pytest.raises(httpx.HTTPStatusError):
        call_with_retries(call, 5, sleep=lambda _: None)
    assert len(calls) == 1


def test_the_last_transient_failure_is_raised_when_attempts_run_out() -> None:
    from toolkit.retry import call_with_retries

    call, calls = failing(*(status_error(503) for _ in range(5)))
    with pytest.raises(httpx.HTTPStatusError):
        call_with_retries(call, 3, sleep=lambda _: None)
    assert len(calls) == 3


def test_fewer_than_one_attempt_is_refused_before_any_call() -> None:
    from toolkit.retry import call_with_retries

    call, calls = failing()
    with pytest.raises(ValueError, match="at least 1"):
        call_with_retries(call, 0, sleep=lambda _: None)
    assert calls == []


def test_call_upstream_takes_its_attempts_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from toolkit.config import settings
    from toolkit.retry import call_upstream

    monkeypatch.setenv("RESILIENT_FLOWS_UPSTREAM_RETRIES", "2")
    monkeypatch.setenv("RESILIENT_FLOWS_UPSTREAM_BACKOFF_SECONDS", "0")
    settings.cache_clear()
    try:
        call, calls = failing(*(status_error(503) for _ in range(5)))
        with pytest.raises(httpx.HTTPStatusError):
            call_upstream(call, "a page")
        assert len(calls) == 3  # the first attempt and 2 retries

        call, calls = failing(status_error(404))
        with pytest.raises(httpx.HTTPStatusError):
            call_upstream(call, "a page")
        assert len(calls) == 1  # permanent: never retried

        call, calls = failing(status_error(503), status_error(429))
        assert call_upstream(call, "a page") == "done" and len(calls) == 3
    finally:
        settings.cache_clear()


def test_a_retry_after_longer_than_the_backoff_is_waited_out() -> None:
    from toolkit.retry import call_with_retries

    request = httpx.Request("GET", "http://upstream/records")
    response = httpx.Response(429, headers={"Retry-After": "3"}, request=request)
    call, _ = failing(httpx.HTTPStatusError("429", request=request, response=response))
    waits: list[float] = []
    call_with_retries(call, 2, first_delay=0.1, max_delay=10, sleep=waits.append)
    assert waits == [3.0]


def test_backoff_doubles_up_to_its_cap() -> None:
    from toolkit.retry import backoff_delays

    delays = backoff_delays(0.5, 3.0, jitter=0.0)
    assert [next(delays) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (status_error(503), "HTTP 503"),
        (httpx.ConnectError("refused"), "ConnectError: refused"),
        (httpx.ReadTimeout(""), "ReadTimeout"),
        (ValueError("bad"), "ValueError: bad"),
    ],
)
def test_a_failure_in_one_line(exc: BaseException, line: str) -> None:
    from toolkit.retry import describe_failure

    assert describe_failure(exc) == line


def test_an_http_failure_names_the_upstreams_reason_never_its_url() -> None:
    from toolkit.retry import describe_failure

    request = httpx.Request("POST", "http://hooks.example/t/s3cr3t-token?key=abc")
    response = httpx.Response(409, json={"error": "batch_id already held"}, request=request)
    error = httpx.HTTPStatusError(str(request.url), request=request, response=response)
    assert describe_failure(error) == "HTTP 409: batch_id already held"
    plain = httpx.Response(400, text="no such thing", request=request)
    assert describe_failure(httpx.HTTPStatusError("x", request=request, response=plain)) == (
        "HTTP 400: no such thing"
    )


# -- the Prefect behaviour `spend_flow_retries` works around ----------------------------------


def _runs_of_a_flow_that_returns_failed(spend: bool) -> int:
    from prefect import flow

    from toolkit.retry import spend_flow_retries

    runs: list[int] = []

    @flow(retries=1, retry_delay_seconds=0)
    def returns_failed() -> Failed:
        runs.append(1)
        if spend:
            spend_flow_retries()
        return Failed(message="a permanent failure, returned rather than raised")

    returns_failed(return_state=True)
    return len(runs)


def test_prefect_retries_a_flow_run_that_returns_failed(prefect_server: str) -> None:
    """Pins Prefect 3.9.1: the server's `RetryFailedFlows` rule
    (prefect/server/orchestration/core_policy.py) retries any run proposing Failed while
    retries remain, returned or raised, and flows take no retry condition. When this test
    fails, Prefect no longer retries returned failures: delete `spend_flow_retries`."""
    assert _runs_of_a_flow_that_returns_failed(spend=False) == 2


def test_spend_flow_retries_ends_a_permanent_failure_at_once(prefect_server: str) -> None:
    assert _runs_of_a_flow_that_returns_failed(spend=True) == 1
