"""Manual intervention: a payment above a threshold waits for a person's approval.

Scenario
    Most payments go through; a large one must be approved by a person, in the Prefect UI,
    who records who decided and why. Nobody answering must not leave it hanging forever.

Solution
    `toolkit.approval.request_approval` (the one ledger_sync uses): an alert through the
    configured notification block, then `pause_flow_run` with a typed form (`approved`,
    `reason`, `approver`; approving needs the approver's name) behind the run's Resume
    button; on timeout the policy decides and a second alert says so. A refusal ends the
    run as `Rejected`, having done nothing.

How to run
    python -c "from flows.approval import approve_payment; approve_payment(amount_eur=5000)"
    # then open the paused run in the UI and press Resume, or:
    # prefect.flow_runs.resume_flow_run(id, run_input={"approved": True, "reason": "ok",
    #                                                  "approver": "me"})
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from prefect.states import Cancelled, State
from pydantic import Field

from flows.ledger.parameters import EurAmount
from toolkit.approval import TimeoutPolicy, request_approval


@flow(name="approval")
def approve_payment(
    amount_eur: EurAmount,
    # 1000, not Decimal("1000"): Prefect writes a Decimal default into the form as text.
    approval_above_eur: EurAmount = 1000,
    timeout_seconds: Annotated[int, Field(ge=1)] = 3600,
    on_timeout: TimeoutPolicy = "reject",
) -> str | State:
    """Pay `amount_eur`, after a person's approval if it is above the threshold.

    Args:
      amount_eur: The payment, in EUR, at least 0. Required: there is no default.

      approval_above_eur: Payments above this many EUR wait for a person's approval.

      timeout_seconds: Seconds to wait for a decision, at least 1.

      on_timeout: What silence means once the timeout has passed: `reject` ends the run as
        Rejected, paying nothing; `approve` pays.
    """
    if amount_eur > approval_above_eur:
        decision = request_approval(
            f"Pay {amount_eur} EUR?",
            f"The payment is above {approval_above_eur} EUR.",
            timeout_seconds,
            on_timeout,
        )
        if not decision.approved:
            return Cancelled(name="Rejected", message=f"Rejected by {decision.decided_by}")
    return f"paid {amount_eur} EUR"
