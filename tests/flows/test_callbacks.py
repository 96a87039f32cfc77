"""flows/callbacks.py: signed callbacks from state hooks, counted at a verifying receiver.

The receiver (sandbox.receiver) runs on loopback and checks every request the way a real one
would (`verify`: 401 on a bad signature or a stale timestamp), keeps one callback per
idempotency key, and can be told to answer some requests with an error first. The runs go
through a real Prefect server (`prefect_server`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from pydantic import SecretStr

from sandbox.receiver import Receiver
from tests.helpers import ROOT
from toolkit.callbacks import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, signed_headers

SECRET = "whsec-5d2a9e71c4-never-log-me"
MAX_ATTEMPTS = 3


@pytest.fixture
def receiver(prefect_server: str) -> Iterator[Receiver]:
    """A verifying receiver and the flow's SignedWebhook block document pointing at it."""
    from blocks import SignedWebhook
    from flows.callbacks import CALLBACK_BLOCK

    receiver = Receiver(secret=SECRET.encode())
    SignedWebhook(
        url=f"{receiver.url}/callbacks",
        secret=SecretStr(SECRET),
        timeout_seconds=5,
        max_attempts=MAX_ATTEMPTS,
    ).save(CALLBACK_BLOCK, overwrite=True)
    yield receiver
    receiver.close()


def run(fail: bool = False) -> tuple[Any, UUID]:
    from flows.callbacks import notify_on_finish

    state = notify_on_finish(fail=fail, return_state=True)
    return state, state.state_details.flow_run_id


def run_logs(run_id: UUID, until: str, timeout: float = 10.0) -> list[str]:
    """The run's log messages once one containing `until` has reached the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id={"any_": [run_id]}), limit=200)
            messages = [log.message for log in logs]
            if any(until in message for message in messages) or time.monotonic() > deadline:
                return messages
            time.sleep(0.2)


@pytest.mark.parametrize(
    ("fail", "state_type", "state_name"),
    [(False, "COMPLETED", "Completed"), (True, "FAILED", "Failed")],
)
def test_each_run_sends_one_verified_callback_with_its_state(
    receiver: Receiver, fail: bool, state_type: str, state_name: str
) -> None:
    state, run_id = run(fail=fail)

    assert state.type.value == state_type
    assert receiver.statuses() == [204]  # one request, verified, no retry
    (request,) = receiver.received
    assert request["verified"]
    assert request["headers"][IDEMPOTENCY_HEADER] == f"{run_id}:{state_type}"
    payload = receiver.accepted[f"{run_id}:{state_type}"]
    assert payload["flow_run_id"] == str(run_id)
    assert payload["state"] == state_type and payload["state_name"] == state_name
    assert payload["flow_name"] == "callbacks" and payload["flow_run_name"]
    if fail:
        assert "failing on purpose" in payload["message"]


def test_transient_answers_are_retried_until_delivered(receiver: Receiver) -> None:
    receiver.script = [503, 503]

    state, run_id = run()

    assert state.is_completed()
    assert receiver.statuses() == [503, 503, 204]
    keys = {request["headers"][IDEMPOTENCY_HEADER] for request in receiver.received}
    assert keys == {f"{run_id}:COMPLETED"}  # the same key on every attempt
    assert all(request["verified"] for request in receiver.received)  # each signed afresh
    assert list(receiver.accepted) == [f"{run_id}:COMPLETED"]


def test_a_receiver_down_for_good_gets_bounded_attempts_and_the_run_stands(
    receiver: Receiver,
) -> None:
    receiver.script = [503] * (MAX_ATTEMPTS + 5)

    state, run_id = run()

    assert state.is_completed()  # a lost callback does not fail the run it reports on
    assert receiver.statuses() == [503] * MAX_ATTEMPTS
    assert any("not delivered" in message for message in run_logs(run_id, "not delivered"))


def test_a_permanent_answer_is_not_retried(receiver: Receiver) -> None:
    receiver.script = [400]

    state, run_id = run(fail=True)

    assert state.is_failed()  # failed by the flow, not by the hook
    assert receiver.statuses() == [400]
    assert any("permanent" in message for message in run_logs(run_id, "permanent"))


def test_the_receiver_rejects_forged_altered_and_stale_requests(
    receiver: Receiver,
) -> None:
    body = json.dumps({"flow_run_id": "x", "state": "COMPLETED"}).encode()
    genuine = signed_headers(SECRET.encode(), body, "x:COMPLETED")
    attempts = {
        "forged signature": (genuine | {SIGNATURE_HEADER: "sha256=" + "ab" * 32}, body),
        "wrong secret": (signed_headers(b"guessed-secret", body, "x:COMPLETED"), body),
        "altered body": (genuine, body.replace(b"COMPLETED", b"FAILED")),
        "stale": (signed_headers(SECRET.encode(), body, "x:COMPLETED", time.time() - 600), body),
        "unsigned": ({IDEMPOTENCY_HEADER: "x:COMPLETED"}, body),
    }

    url = f"{receiver.url}/callbacks"
    with httpx.Client() as client:
        answers = {
            name: client.post(url, content=content, headers=headers).status_code
            for name, (headers, content) in attempts.items()
        }
        genuine_answer = client.post(url, content=body, headers=genuine).status_code

    assert answers == dict.fromkeys(attempts, 401)
    assert genuine_answer == 204  # the receiver is not simply refusing everything
    assert list(receiver.accepted) == ["x:COMPLETED"]


def test_the_secret_never_reaches_the_runs_logs(receiver: Receiver) -> None:
    receiver.script = [503]  # a retry logs too

    for fail in (False, True):
        _, run_id = run(fail=fail)
        messages = run_logs(run_id, "delivered")

        assert any("delivered" in message for message in messages)  # the hook's logs arrived
        assert all(SECRET not in message for message in messages)


def test_an_unknown_block_is_logged_and_the_run_stands(prefect_server: str) -> None:
    from prefect import flow

    from toolkit.callbacks import webhook_hooks

    @flow(name="callbacks-unknown-block", **webhook_hooks("no-such-callback-webhook"))
    def finishes() -> int:
        return 1

    state = finishes(return_state=True)

    assert state.is_completed()
    run_id = state.state_details.flow_run_id
    assert any("not delivered" in message for message in run_logs(run_id, "not delivered"))


CRASHING_FLOW = """
from prefect import flow

from toolkit.callbacks import webhook_hooks


class ProcessDying(BaseException):
    pass


@flow(name="callbacks-crash", **webhook_hooks({block!r}))
def dies() -> None:
    raise ProcessDying("the process goes down mid-run")


dies()
"""


def test_a_crashed_run_sends_its_callback(receiver: Receiver) -> None:
    from flows.callbacks import CALLBACK_BLOCK

    # A BaseException (not an Exception) is what Prefect reports as Crashed; in a process of
    # its own so that the crash cannot disturb this one.
    result = subprocess.run(
        [sys.executable, "-c", CRASHING_FLOW.format(block=CALLBACK_BLOCK)],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=20,
    )

    assert result.returncode != 0 and "ProcessDying" in result.stderr
    assert receiver.statuses() == [204]
    (payload,) = receiver.accepted.values()
    assert payload["state"] == "CRASHED" and payload["flow_name"] == "callbacks-crash"
    assert receiver.received[0]["headers"][IDEMPOTENCY_HEADER].endswith(":CRASHED")
