"""flows/graceful_degradation.py: partial work ends Degraded, too much loss ends Failed."""

from __future__ import annotations

import pytest

from sandbox.server import Sandbox

pytestmark = pytest.mark.usefixtures("sandbox_blocks")


def run(**parameters):
    from flows.graceful_degradation import count_records

    return count_records(**parameters, return_state=True)


def test_all_pages_there_is_plain_completed(sandbox: Sandbox) -> None:
    state = run()
    assert state.name == "Completed" and state.result().records == 1000


def test_a_missing_late_page_is_degraded(sandbox: Sandbox) -> None:
    sandbox.set_missing_pages({900})

    state = run(max_loss_fraction=0.2)

    assert state.is_completed() and state.name == "Degraded"
    assert "page 10 answered 404" in state.message
    assert state.result().records == 900


def test_a_missing_early_page_fails(sandbox: Sandbox) -> None:
    sandbox.set_missing_pages({100})

    state = run(max_loss_fraction=0.2)

    assert state.is_failed() and "more than 20.0% allowed" in state.message
