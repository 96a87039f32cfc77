"""flows/callbacks.py: signed callbacks from state hooks, counted at a verifying receiver.

The receiver runs on loopback and checks every request the way a real one would (`verify`:
401 on a bad signature or a stale timestamp), keeps one callback per idempotency key, and
can be told to answer some requests with an error first. The runs go through a real Prefect
server (`prefect_server`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from pydantic import SecretStr

from toolkit.callbacks import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, signed_headers, verify

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec-5d2a9e71c4-never-log-me"
MAX_ATTEMPTS = 3


class VerifyingReceiver:
    """A webhook receiver that verifies signatures and answers `script` statuses first."""

    def __init__(self, secret: bytes) -> None:
        self.requests: list[dict[str, Any]] = []
        """Every request, in order: its headers, payload, whether it verified, the answer."""
        self.accepted: dict[str, dict[str, Any]] = {}
        """Verified callbacks by idempotency key: a retried duplicate is dropped."""
        self.script: list[int] = []
        """Statuses to answer verified requests with, first to last; 204 once it is spent."""
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = dict(self.headers)
                verified = verify(secret, headers, body)
                with lock:
                    if not verified:
                        status = 401
                    elif receiver.script:
                        status = receiver.script.pop(0)
                    else:
                        status = 204
                        key = headers.get(IDEMPOTENCY_HEADER, "")
                        receiver.accepted.setdefault(key, json.loads(body))
                    receiver.requests.append(
                        {"headers": headers, "body": body, "verified": verified, "status": status}
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callbacks"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def statuses(self) -> list[int]:
        return [request["status"] for request in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(prefect_server: str) -> Iterator[VerifyingReceiver]:
    """A verifying receiver and the flow's SignedWebhook block document pointing at it."""
    from blocks import SignedWebhook
    from flows.callbacks import CALLBACK_BLOCK

    receiver = VerifyingReceiver(SECRET.encode())
    SignedWebhook(
        url=receiver.url, secret=SecretStr(SECRET), timeout_seconds=5, max_attempts=MAX_ATTEMPTS
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
    receiver: VerifyingReceiver, fail: bool, state_type: str, state_name: str
) -> None:
    state, run_id = run(fail=fail)

    assert state.type.value == state_type
    assert receiver.statuses() == [204]  # one request, verified, no retry
    (request,) = receiver.requests
    assert request["verified"]
    assert request["headers"][IDEMPOTENCY_HEADER] == f"{run_id}:{state_type}"
    payload = receiver.accepted[f"{run_id}:{state_type}"]
    assert payload["flow_run_id"] == str(run_id)
    assert payload["state"] == state_type and payload["state_name"] == state_name
    assert payload["flow_name"] == "callbacks" and payload["flow_run_name"]
    if fail:
        assert "failing on purpose" in payload["message"]


def test_transient_answers_are_retried_until_delivered(receiver: VerifyingReceiver) -> None:
    receiver.script = [503, 503]

    state, run_id = run()

    assert state.is_completed()
    assert receiver.statuses() == [503, 503, 204]
    keys = {request["headers"][IDEMPOTENCY_HEADER] for request in receiver.requests}
    assert keys == {f"{run_id}:COMPLETED"}  # the same key on every attempt
    assert all(request["verified"] for request in receiver.requests)  # each signed afresh
    assert list(receiver.accepted) == [f"{run_id}:COMPLETED"]


def test_a_receiver_down_for_good_gets_bounded_attempts_and_the_run_stands(
    receiver: VerifyingReceiver,
) -> None:
    receiver.script = [503] * (MAX_ATTEMPTS + 5)

    state, run_id = run()

    assert state.is_completed()  # a lost callback does not fail the run it reports on
    assert receiver.statuses() == [503] * MAX_ATTEMPTS
    assert any("not delivered" in message for message in run_logs(run_id, "not delivered"))


def test_a_permanent_answer_is_not_retried(receiver: VerifyingReceiver) -> None:
    receiver.script = [400]

    state, run_id = run(fail=True)

    assert state.is_failed()  # failed by the flow, not by the hook
    assert receiver.statuses() == [400]
    assert any("permanent" in message for message in run_logs(run_id, "permanent"))


def test_the_receiver_rejects_forged_altered_and_stale_requests(
    receiver: VerifyingReceiver,
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

    with httpx.Client() as client:
        answers = {
            name: client.post(receiver.url, content=content, headers=headers).status_code
            for name, (headers, content) in attempts.items()
        }
        genuine_answer = client.post(receiver.url, content=body, headers=genuine).status_code

    assert answers == dict.fromkeys(attempts, 401)
    assert genuine_answer == 204  # the receiver is not simply refusing everything
    assert list(receiver.accepted) == ["x:COMPLETED"]


def test_the_secret_never_reaches_the_runs_logs(receiver: VerifyingReceiver) -> None:
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


def test_a_crashed_run_sends_its_callback(receiver: VerifyingReceiver) -> None:
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
    assert receiver.requests[0]["headers"][IDEMPOTENCY_HEADER].endswith(":CRASHED")
