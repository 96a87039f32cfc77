"""Manual intervention: pause a run until a person approves or rejects it in the UI.

Scenario: a sync is about to load an unusual amount of money, or an unusual share of its
records is invalid. A person should decide before anything is loaded, with the facts in
front of them, and the decision (who, why) should stay with the run.

Solution: `request_approval` alerts (toolkit.alerts) and pauses the flow run with Prefect's
`pause_flow_run(wait_for_input=Approval)`: the UI renders the `Approval` model as a form
(approved, reason, approver) behind the run's Resume button. Approving needs an approver's
name: the rule is in the form's JSON schema (`if approved then approver minLength 1`), which
the server applies to every resume, from the UI (the field shows the error) or the API (an
error naming the field), and in the model's own validation. A refusal needs no name:
stopping is never the risky choice. On input the decision is returned; at the timeout the
configured policy decides (`reject` by default), its decision is delivered as run input like
a person's (its approver: "timeout policy"), and a second alert says so. The process stays
alive while paused (no deployment or persisted results needed).

How to run: see flows/approval.py; resume from the UI or with
`prefect.flow_runs.resume_flow_run(flow_run_id, run_input={"approved": True, ...})`.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Literal

from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from prefect.logging import get_logger
from prefect.runtime import flow_run
from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from toolkit.alerts import alert

TimeoutPolicy = Literal["reject", "approve"]

APPROVER_NEEDED = "approving needs the approver's name"

APPROVER_RULE = {
    # `required` in `if`: an input without `approved` is a refusal (the default), not an
    # approval; the schema must judge it as the model does.
    "if": {"properties": {"approved": {"const": True}}, "required": ["approved"]},
    "then": {"properties": {"approver": {"minLength": 1}}, "required": ["approver"]},
}
"""The rule in JSON schema form, for the server, which validates each resume against the saved
schema (and the UI, which asks the server to validate the form as it is filled in)."""


class Approval(RunInput):
    """The form a person fills in to let a paused run go on, or stop it."""

    model_config = ConfigDict(json_schema_extra=APPROVER_RULE)

    # Defaults here, not through `with_initial_data(**values)`: that rebuilds each field it
    # is given from its bare type, so the form would lose the descriptions below.
    approved: bool = Field(False, description="Let the run go on and load?")
    reason: str = Field("", description="Why: this stays with the run.")
    approver: str = Field(
        "", description="Who decided: required to approve.", validate_default=True
    )

    @field_validator("approver")
    @classmethod
    def _named_if_approved(cls, approver: str, info: ValidationInfo) -> str:
        # The same test as APPROVER_RULE (empty, not blank), so that no input the server
        # accepted fails here, in the paused run.
        if info.data.get("approved") and not approver:
            raise ValueError(APPROVER_NEEDED)
        return approver

    @property
    def decided_by(self) -> str:
        """Who decided, for messages: a refusal may come without a name."""
        return self.approver or "a person who gave no name"


TIMEOUT_APPROVER = "timeout policy"


def request_approval(
    question: str,
    facts: str,
    timeout_seconds: int,
    on_timeout: TimeoutPolicy = "reject",
    poll_interval_seconds: int = 2,
) -> Approval:
    """Pause the current flow run for a decision; the decision (or the timeout policy's)."""
    logger = get_run_logger()
    link = flow_run.ui_url or f"flow run {flow_run.id}"
    alert(f"Approval needed: {question}", f"{facts}\nDecide in the UI: {link}")
    form = Approval.with_initial_data(description=f"**{question}**\n\n{facts}")
    policy = {
        "approved": on_timeout == "approve",
        "reason": f"no decision within {timeout_seconds} s: policy '{on_timeout}'",
        "approver": TIMEOUT_APPROVER,
    }
    # Once a pause has expired the server lets the run go nowhere but Failed (Prefect 3.9.1,
    # HandleResumingPausedFlows in prefect/server/orchestration/core_policy.py; pinned by
    # tests/toolkit/test_approval.py), so the policy's decision is delivered through the same
    # door as a person's, just before the deadline.
    timer = threading.Timer(
        timeout_seconds, contextvars.copy_context().run, (_resume, flow_run.id, policy)
    )
    timer.start()
    try:
        decision = pause_flow_run(
            wait_for_input=form,
            timeout=timeout_seconds + PAUSE_GRACE_SECONDS,
            poll_interval=poll_interval_seconds,
        )
    except FlowPauseTimeout:
        decision = Approval(**policy)
    finally:
        timer.cancel()
    if decision.approver == TIMEOUT_APPROVER:
        alert(f"Approval timed out: {question}", f"{decision.reason}\n{link}")
    logger.info(
        "Approval %s by %s: %s",
        "granted" if decision.approved else "refused",
        decision.decided_by,
        decision.reason,
    )
    return Approval(approved=decision.approved, reason=decision.reason, approver=decision.approver)


PAUSE_GRACE_SECONDS = 30


def _resume(flow_run_id: str, run_input: dict[str, object]) -> None:
    try:
        resume_flow_run(flow_run_id, run_input=run_input)
    except Exception:  # a person answered first: their decision stands
        get_logger("resilient_flows.approval").debug("Run %s already resumed", flow_run_id)
