"""When lost work degrades a run and when it fails it: the decision, and the states a real
flow run ends in (with their event and alert)."""

from __future__ import annotations

import pytest
from prefect import flow

from toolkit.degradation import loss_fraction, outcome, too_lossy


@pytest.mark.parametrize(
    ("lost", "total", "allowed", "fails"),
    [(0, 0, 0.0, False), (5, 100, 0.05, False), (6, 100, 0.05, True), (1, 1, 1.0, False)],
)
def test_only_a_loss_above_the_allowed_share_fails(lost, total, allowed, fails) -> None:
    assert (too_lossy(lost, total, allowed) is not None) is fails


def test_the_reason_says_how_much_was_lost() -> None:
    assert too_lossy(6, 100, 0.05) == "6 of 100 lost (6.0%, more than 5.0% allowed)"
    assert loss_fraction(0, 0) == 0.0


@flow
def lossy(lost: int, total: int) -> object:
    return outcome("Test job", {"done": total - lost}, lost, total, 0.1, "no rate")


def test_a_run_without_loss_completes_with_its_result(prefect_server: str) -> None:
    state = lossy(0, 10, return_state=True)
    assert state.name == "Completed" and state.result() == {"done": 10}


def test_a_small_loss_ends_degraded_a_completed_state(prefect_server: str) -> None:
    state = lossy(1, 10, return_state=True)
    assert state.is_completed() and state.name == "Degraded"
    assert state.message == "Degraded: 1 of 10 not done (10.0%): no rate"
    assert state.result() == {"done": 9}


def test_a_large_loss_fails_the_run(prefect_server: str) -> None:
    state = lossy(2, 10, return_state=True)
    assert state.is_failed() and "2 of 10 lost" in state.message
