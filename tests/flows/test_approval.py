"""flows/approval.py: the pause shows a typed form, input resumes it, silence follows policy."""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import pytest

from tests.helpers.polling import poll_until


def start(**parameters):
    """Run approve_payment in a thread until it pauses; (thread, holder, paused flow run)."""
    from prefect.client.orchestration import get_client

    from flows.approval import approve_payment

    holder: dict = {}

    def target() -> None:
        holder["state"] = approve_payment(**parameters, return_state=True)

    def paused_run():
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(limit=5, sort="START_TIME_DESC")
        return next((run for run in runs if run.state and run.state.is_paused()), None)

    thread = threading.Thread(target=target)
    thread.start()
    run = poll_until(paused_run, timeout=60, interval=0.3, what="the run pausing")
    return thread, holder, run


def test_the_pause_offers_a_typed_form(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    thread, holder, run = start(amount_eur=Decimal("5000"))
    keys = run.state.state_details.run_input_keyset
    with get_client(sync_client=True) as client:
        schema = json.loads(client.read_flow_run_input(run.id, keys["schema"]))
    assert {"approved", "reason", "approver"} <= set(schema["properties"])
    assert schema["properties"]["approved"]["type"] == "boolean"

    resume_flow_run(run.id, run_input={"approved": True, "reason": "ok", "approver": "cfo"})
    thread.join(timeout=60)
    assert holder["state"].result() == "paid 5000 EUR"


def test_a_refusal_rejects(prefect_server: str) -> None:
    from prefect.flow_runs import resume_flow_run

    thread, holder, run = start(amount_eur=Decimal("5000"))
    resume_flow_run(run.id, run_input={"approved": False, "reason": "no", "approver": "cfo"})
    thread.join(timeout=60)
    assert holder["state"].name == "Rejected" and "cfo" in holder["state"].message


def test_approving_without_an_approver_is_refused(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    thread, holder, run = start(amount_eur=Decimal("5000"))
    with pytest.raises(RuntimeError, match="field 'approver'"):
        resume_flow_run(run.id, run_input={"approved": True, "reason": "ok", "approver": ""})
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run.id).state.is_paused()  # still waiting for a person

    resume_flow_run(run.id, run_input={"approved": True, "reason": "ok", "approver": "cfo"})
    thread.join(timeout=60)
    assert holder["state"].result() == "paid 5000 EUR"


def test_a_refusal_needs_no_name(prefect_server: str) -> None:
    from prefect.flow_runs import resume_flow_run

    thread, holder, run = start(amount_eur=Decimal("5000"))
    resume_flow_run(run.id, run_input={"approved": False, "reason": "no"})
    thread.join(timeout=60)
    assert holder["state"].message == "Rejected by a person who gave no name"


def test_small_payments_do_not_wait(prefect_server: str) -> None:
    from flows.approval import approve_payment

    assert approve_payment(amount_eur=Decimal("10")) == "paid 10 EUR"


@pytest.mark.parametrize(("policy", "name"), [("reject", "Rejected"), ("approve", "Completed")])
def test_silence_follows_the_timeout_policy(prefect_server: str, policy: str, name: str) -> None:
    from flows.approval import approve_payment

    state = approve_payment(
        amount_eur=Decimal("5000"), timeout_seconds=2, on_timeout=policy, return_state=True
    )
    assert state.name == name
