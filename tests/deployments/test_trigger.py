"""deployments/trigger.py: how `run --wait` ends (the state, the link, the exit code).

Prefect's own State objects, built by hand; the end-to-end run is in
tests/e2e/test_async_deployments.py.
"""

from __future__ import annotations

import pytest
from prefect.states import Cancelled, Completed, Failed, Running, State

from deployments.trigger import closing

LINK = "http://127.0.0.1:4200/runs/flow-run/0b6f"


@pytest.mark.parametrize(
    ("state", "code", "first_line"),
    [
        (Completed(), 0, "Completed"),
        (Completed(name="Degraded", message="3 skipped"), 0, "Degraded: 3 skipped"),
        (Failed(message="the job failed after 0 s"), 1, "Failed: the job failed after 0 s"),
        (Cancelled(name="Rejected", message="by cfo"), 1, "Rejected: by cfo"),
    ],
)
def test_a_final_state_ends_with_its_name_message_and_link(
    state: State, code: int, first_line: str
) -> None:
    assert closing(state, LINK, 60) == (code, f"{first_line}\n{LINK}")


@pytest.mark.parametrize("state", [Running(), None])
def test_a_run_still_going_at_the_timeout_fails_and_says_so(state: State | None) -> None:
    code, words = closing(state, LINK, 2.5)

    assert code == 1
    assert words == f"still {state.name if state else 'unknown'} after 2.5 s (it goes on): {LINK}"


def test_no_ui_is_said_rather_than_a_broken_link() -> None:
    assert closing(Completed(), None, 60) == (0, "Completed\n(this server has no UI)")
