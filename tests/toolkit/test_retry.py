"""The classification every upstream task retries by (unit tests: no network)."""

from __future__ import annotations

import httpx
import pytest
from prefect.states import Failed

from toolkit.retry import is_transient, retry_if_transient


def status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://upstream/records")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


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
