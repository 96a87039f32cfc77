"""flows/transient_retry.py: retries only for transient answers, counted at the sandbox."""

from __future__ import annotations

import pytest

from sandbox.server import Sandbox

pytestmark = pytest.mark.usefixtures("sandbox_blocks")


def run(**parameters):
    from flows.transient_retry import transient_retry

    return transient_retry(**parameters, return_state=True)


def test_transient_answers_are_retried_until_success(sandbox: Sandbox) -> None:
    sandbox.set_faults("rates", error_rate=0.6)

    state = run()

    assert state.is_completed() and state.result()["base"] == "EUR"
    by_status = sandbox.counters()["rates"]["by_status"]
    assert by_status["200"] == 1 and sum(by_status.values()) > 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_permanent_answers_are_never_retried(sandbox: Sandbox, status: int) -> None:
    sandbox.set_faults("rates", force_status=[status])

    assert run().is_failed()
    assert sandbox.counters()["rates"]["requests"] == 1


def test_retry_after_is_waited_out(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    from types import SimpleNamespace

    import toolkit.retry

    waits: list[float] = []
    monkeypatch.setattr(toolkit.retry, "time", SimpleNamespace(sleep=waits.append, time=time.time))
    sandbox.set_faults("rates", rate_limit_rate=0.6, retry_after=3)

    assert run().is_completed()

    by_status = sandbox.counters()["rates"]["by_status"]
    assert by_status["200"] == 1
    assert by_status["429"] >= 1
    assert waits == [3.0] * by_status["429"]  # each retry waited what was asked
