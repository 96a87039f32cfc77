"""toolkit/approval.py: approving needs an approver, in the model and in the form's schema.

The schema is checked with Prefect's own `schema_tools.validate`, the function the server runs
on every resume (and, through /ui/schemas/validate, on the UI's form as it is filled in).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from pydantic import ValidationError

from toolkit.approval import APPROVER_NEEDED, TIMEOUT_APPROVER, Approval

CASES = [
    # (run input, accepted)
    ({"approved": True, "reason": "ok", "approver": "cfo"}, True),
    ({"approved": True, "reason": "ok", "approver": ""}, False),
    ({"approved": True, "reason": "ok"}, False),
    ({"approved": False, "reason": "no", "approver": ""}, True),  # stopping needs no name
    ({}, True),  # a refusal: the defaults
    ({"approved": True, "reason": "no decision", "approver": TIMEOUT_APPROVER}, True),
]


def form_schema() -> dict[str, Any]:
    """The schema `pause_flow_run` saves for the form (RunInput.save's own call)."""
    from prefect._internal.pydantic.v2_schema import create_v2_schema

    form = Approval.with_initial_data(description="Pay 5000 EUR?")
    return create_v2_schema(form.__name__, model_base=form)


def schema_accepts(run_input: dict[str, Any]) -> bool:
    from prefect.utilities.schema_tools import validate

    return not validate(run_input, form_schema())


def model_accepts(run_input: dict[str, Any]) -> bool:
    try:
        Approval(**run_input)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(("run_input", "accepted"), CASES)
def test_the_model_and_the_schema_agree(run_input: dict[str, Any], accepted: bool) -> None:
    # They must: an input the server accepts and the model refuses would fail the paused run.
    assert model_accepts(run_input) is accepted
    assert schema_accepts(run_input) is accepted


def test_the_model_names_the_field() -> None:
    with pytest.raises(ValidationError) as raised:
        Approval(approved=True, reason="ok", approver="")

    (error,) = raised.value.errors()
    assert error["loc"] == ("approver",) and APPROVER_NEEDED in error["msg"]


def test_the_servers_check_names_the_field() -> None:
    from prefect.utilities.schema_tools import ValidationError as SchemaError
    from prefect.utilities.schema_tools import validate

    with pytest.raises(SchemaError, match="field 'approver'"):
        validate({"approved": True, "approver": ""}, form_schema(), raise_on_error=True)


def test_the_form_keeps_the_field_descriptions() -> None:
    properties = form_schema()["properties"]

    assert properties["approver"]["description"] == "Who decided: required to approve."
    assert properties["approved"]["default"] is False


def test_prefect_initial_data_drops_descriptions() -> None:
    """Pins the Prefect behaviour Approval works around by declaring its defaults itself: when
    this fails, `with_initial_data(**values)` keeps descriptions and could set them again."""
    from prefect._internal.pydantic.v2_schema import create_v2_schema

    form = Approval.with_initial_data(approved=False, reason="", approver="")
    schema = create_v2_schema(form.__name__, model_base=form)
    assert "description" not in schema["properties"]["approver"]


def test_decided_by_names_someone() -> None:
    assert Approval(approved=True, approver="cfo").decided_by == "cfo"
    assert Approval(approved=False).decided_by == "a person who gave no name"


def test_prefect_fails_a_run_that_goes_on_after_its_pause_expired(prefect_server: str) -> None:
    """Pins the Prefect behaviour `request_approval`'s timer works around (3.9.1,
    `HandleResumingPausedFlows` in prefect/server/orchestration/core_policy.py): once a pause's
    deadline has passed, the run may leave Paused only for Failed, so a decision taken after
    `FlowPauseTimeout` can never be acted on. When this fails, the timer can go: catching
    `FlowPauseTimeout` and applying the policy would be enough."""
    from prefect import flow
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    @flow
    def goes_on_after_the_deadline() -> str:
        with contextlib.suppress(FlowPauseTimeout):
            pause_flow_run(timeout=1, poll_interval=1)
        return "went on"

    state = goes_on_after_the_deadline(return_state=True)
    assert state.is_failed(), state
    assert "never resumed" in (state.message or ""), state.message
