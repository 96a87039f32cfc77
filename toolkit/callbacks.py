"""Callbacks: tell another system how a flow run ended, with a signature it can check.

Scenario: when a flow run completes, fails or crashes, a receiver outside Prefect (a ledger,
a ticketing tool, a partner's API) must hear about it once, must be able to tell a genuine
callback from a forged or replayed one, and a flaky receiver must neither lose the callback
nor turn a finished run into a failed one.

Solution: flow state hooks (`webhook_hooks`) that load a `SignedWebhook` block when they run
and `deliver` a small JSON payload:
- `X-Signature: sha256=<hex>` is an HMAC-SHA256, keyed by the block's secret, over
  `"<timestamp>." + body`, and `X-Timestamp` is that Unix time in seconds: the receiver's
  `verify` rejects an altered body, a wrong key and a timestamp outside its tolerance (so a
  captured request cannot be replayed later);
- `X-Idempotency-Key` is `<flow_run_id>:<STATE_TYPE>`, the same on every attempt, so a
  receiver drops the duplicates that retries create (a 2xx lost on the way back);
- transient failures (`toolkit.retry.is_transient`: timeouts, connection errors, 429, 5xx)
  are retried a bounded number of times with exponential backoff; permanent ones (any other
  4xx) are not; a hook logs a callback it could not deliver and never raises.

How to use:
    @flow(**webhook_hooks("ledger-callbacks"))
    def my_flow() -> None: ...

    # receiver side, e.g. in a web handler:
    if not verify(secret, request.headers, request.body):
        return 401
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from prefect.logging.loggers import flow_run_logger

from blocks.signed_webhook import SignedWebhook
from toolkit.retry import call_with_retries, checked, describe_failure, is_transient

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Timestamp"
IDEMPOTENCY_HEADER = "X-Idempotency-Key"
SIGNATURE_PREFIX = "sha256="

BACKOFF_SECONDS = 0.25
"""Wait before the second attempt; doubled before each next one, plus up to 50% jitter."""
MAX_WAIT_SECONDS = 10.0
"""Cap on one wait, Retry-After included: a hook holds up the end of its flow run."""

HOOK_EVENTS = ("on_completion", "on_failure", "on_crashed")

logger = logging.getLogger("resilient_flows.callbacks")

StateHook = Callable[[Any, Any, Any], None]


class DeliveryError(Exception):
    """A callback that was refused (permanent answer) or still failing after its attempts."""


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of `"<timestamp>." + body` under `secret`."""
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signed_headers(
    secret: bytes, body: bytes, idempotency_key: str, now: float | None = None
) -> dict[str, str]:
    """The signature, timestamp and idempotency headers of one request carrying `body`."""
    timestamp = str(int(time.time() if now is None else now))
    return {
        SIGNATURE_HEADER: SIGNATURE_PREFIX + sign(secret, timestamp, body),
        TIMESTAMP_HEADER: timestamp,
        IDEMPOTENCY_HEADER: idempotency_key,
    }


def verify(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_seconds: int = 300,
    now: float | None = None,
) -> bool:
    """Receiver side: True only for a genuine signature over `body` with a fresh timestamp.

    Header names are matched case-insensitively (HTTP does not preserve their case).
    """
    fields = {name.lower(): value for name, value in headers.items()}
    signature = fields.get(SIGNATURE_HEADER.lower(), "")
    timestamp = fields.get(TIMESTAMP_HEADER.lower(), "")
    if not signature.startswith(SIGNATURE_PREFIX):
        return False
    # isascii() too: str.isdigit() accepts digits such as '²' that int() refuses.
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    current = time.time() if now is None else now
    # Both directions: a timestamp far in the future would otherwise stay replayable.
    if abs(current - int(timestamp)) > tolerance_seconds:
        return False
    expected = sign(secret, timestamp, body).encode()
    # Bytes, not str: compare_digest raises on non-ASCII str, and headers are attacker input.
    provided = signature.removeprefix(SIGNATURE_PREFIX).encode("utf-8", "replace")
    return hmac.compare_digest(expected, provided)


def idempotency_key(payload: Mapping[str, Any]) -> str:
    """`<flow_run_id>:<STATE_TYPE>` for a run's callback, else a hash of the payload.

    Both are the same on every attempt of one callback, which is what lets a receiver drop
    the duplicates retries create.
    """
    if payload.get("flow_run_id") and payload.get("state"):
        return f"{payload['flow_run_id']}:{payload['state']}"
    return "sha256:" + hashlib.sha256(_encode(payload)).hexdigest()


def deliver(
    webhook: SignedWebhook,
    payload: dict[str, Any],
    *,
    key: str | None = None,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> None:
    """POST `payload` as signed JSON to `webhook`, retrying transient failures only.

    Raises `DeliveryError` when the receiver refuses it (a permanent answer such as 400 or
    401, never retried) or after `webhook.max_attempts` transient failures; the hooks of
    `webhook_hooks` log that error instead of raising it.

    Why a loop and not Prefect task retries: a flow hook runs after the run's final state is
    set, and Prefect runs no task retries for a hook. Calling a `@task` from the hook does
    work in 3.9.1, but it records a task run (and its retries) under a run that has already
    finished, and every attempt then also needs the Prefect API; on a crash that may be the
    very thing that is down. A few bounded attempts here cost nothing of the sort.

    Each attempt is signed afresh (a new timestamp, so a slow retry does not go stale) with
    the same idempotency key. Nothing logged names the secret, the signature or the URL's
    path or query (webhook URLs often carry a token there): only the host.
    """
    log = log or logger
    key = key or idempotency_key(payload)
    body = _encode(payload)
    secret = webhook.secret.get_secret_value().encode()
    host = httpx.URL(webhook.url).host

    def post() -> httpx.Response:  # signed per attempt: a slow retry does not go stale
        headers = {"Content-Type": "application/json", **signed_headers(secret, body, key)}
        return checked(client.post(webhook.url, content=body, headers=headers))

    def note(attempt: int, exc: BaseException, wait: float) -> None:
        log.warning(
            "Callback %s to %s failed (%s), attempt %d of %d; next in %.2f s",
            key,
            host,
            describe_failure(exc),
            attempt,
            webhook.max_attempts,
            wait,
        )

    with httpx.Client(timeout=webhook.timeout_seconds) as client:
        try:
            response = call_with_retries(
                post, webhook.max_attempts, BACKOFF_SECONDS, MAX_WAIT_SECONDS, note
            )
        except Exception as exc:
            reason = describe_failure(exc)
            if not is_transient(exc):
                raise DeliveryError(
                    f"callback {key} refused by {host}: {reason} (permanent: not retried)"
                ) from exc
            raise DeliveryError(
                f"callback {key} to {host} still failing after {webhook.max_attempts} "
                f"attempts: {reason}"
            ) from exc
    log.info("Callback %s delivered to %s (HTTP %d)", key, host, response.status_code)


def callback_payload(flow: Any, flow_run: Any, state: Any) -> dict[str, Any]:
    """What a receiver is told about a run that reached `state`."""
    return {
        "flow_run_id": str(flow_run.id),
        "flow_run_name": flow_run.name,
        "flow_name": flow.name,
        "state": state.type.value,
        "state_name": state.name,
        "message": state.message,
    }


def webhook_hooks(block_name: str) -> dict[str, list[StateHook]]:
    """Flow keyword arguments that send a signed callback when a run completes, fails or crashes.

    The `SignedWebhook` document `block_name` is loaded when a hook runs, never at import
    time, so rotating the key or moving the receiver needs no code change or redeploy.
    """

    def send_callback(flow: Any, flow_run: Any, state: Any) -> None:
        # The run's own logger: the outcome shows in the run's logs in the UI.
        log = flow_run_logger(flow_run=flow_run, flow=flow)
        try:
            # _sync: a sync hook of an async flow runs inside an event loop, where Prefect's
            # dispatch would otherwise hand back an un-awaited coroutine.
            webhook = SignedWebhook.load(block_name, _sync=True)  # type: ignore[call-arg]
            deliver(webhook, callback_payload(flow, flow_run, state), log=log)
        except Exception as exc:
            # A callback must not change the outcome it reports on.
            log.error(
                "Callback for %s through SignedWebhook %r not delivered: %s",
                state.type.value,
                block_name,
                exc,
            )

    send_callback.__name__ = send_callback.__qualname__ = f"signed_callback[{block_name}]"
    return {event: [send_callback] for event in HOOK_EVENTS}


def _encode(payload: Mapping[str, Any]) -> bytes:
    # One canonical encoding: the signature covers these exact bytes, sent as they are.
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()
