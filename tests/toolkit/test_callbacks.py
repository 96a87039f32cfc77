"""toolkit/callbacks.py: what a receiver accepts and what it rejects, without a network."""

from __future__ import annotations

import json
import time

import pytest
from pydantic import SecretStr, ValidationError

from blocks import SignedWebhook
from toolkit.callbacks import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    idempotency_key,
    sign,
    signed_headers,
    verify,
)

SECRET = b"k3y-for-tests"
BODY = json.dumps({"flow_run_id": "3f1c", "state": "COMPLETED"}).encode()
NOW = 1_700_000_000.0


def headers(secret: bytes = SECRET, body: bytes = BODY, now: float = NOW) -> dict[str, str]:
    return signed_headers(secret, body, "3f1c:COMPLETED", now=now)


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    # Independent vector: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'k3y'
    expected = "fd5a70e965043f7df6309c2c3b5ff5a8ffa99b1f5175e9a311459e73c4634d4a"
    assert sign(b"k3y", "1700000000", b'{"a":1}') == expected


def test_headers_carry_signature_timestamp_and_idempotency_key() -> None:
    sent = headers()
    assert sent[TIMESTAMP_HEADER] == "1700000000"
    assert sent[SIGNATURE_HEADER] == "sha256=" + sign(SECRET, "1700000000", BODY)
    assert sent[IDEMPOTENCY_HEADER] == "3f1c:COMPLETED"


def test_round_trip_is_accepted() -> None:
    assert verify(SECRET, headers(), BODY, now=NOW)
    assert verify(SECRET, headers(now=time.time()), BODY)  # the default clock


def test_header_names_are_case_insensitive() -> None:
    lowered = {name.lower(): value for name, value in headers().items()}
    assert verify(SECRET, lowered, BODY, now=NOW)


def test_forged_signature_is_rejected() -> None:
    forged = headers() | {SIGNATURE_HEADER: "sha256=" + "0" * 64}
    assert not verify(SECRET, forged, BODY, now=NOW)


@pytest.mark.parametrize(
    "signature",
    ["", "deadbeef", "sha256=", "sha1=" + "0" * 40, "sha256=ÿ" + "0" * 63, "sha256=Ω"],
)
def test_malformed_signature_is_rejected_without_raising(signature: str) -> None:
    assert not verify(SECRET, headers() | {SIGNATURE_HEADER: signature}, BODY, now=NOW)


def test_wrong_secret_is_rejected() -> None:
    assert not verify(SECRET, headers(secret=b"another-key"), BODY, now=NOW)


def test_altered_body_is_rejected() -> None:
    altered = BODY.replace(b"COMPLETED", b"FAILED")
    assert not verify(SECRET, headers(), altered, now=NOW)
    assert not verify(SECRET, headers(), BODY + b" ", now=NOW)


def test_altered_timestamp_is_rejected() -> None:
    # The timestamp is signed: moving it forward to pass the tolerance breaks the signature.
    moved = headers() | {TIMESTAMP_HEADER: str(int(NOW) + 1)}
    assert not verify(SECRET, moved, BODY, now=NOW)


@pytest.mark.parametrize("age", [301, 3600, -301])
def test_timestamp_outside_the_tolerance_is_rejected(age: int) -> None:
    # A negative age is a timestamp from the future: it would stay replayable for longer.
    assert not verify(SECRET, headers(now=NOW - age), BODY, now=NOW)


@pytest.mark.parametrize("age", [0, 299, 300, -300])
def test_timestamp_within_the_tolerance_is_accepted(age: int) -> None:
    assert verify(SECRET, headers(now=NOW - age), BODY, now=NOW)


def test_tolerance_is_the_receivers_choice() -> None:
    sent = headers(now=NOW - 60)
    assert verify(SECRET, sent, BODY, now=NOW, tolerance_seconds=60)
    assert not verify(SECRET, sent, BODY, now=NOW, tolerance_seconds=59)


@pytest.mark.parametrize("missing", [SIGNATURE_HEADER, TIMESTAMP_HEADER])
def test_missing_header_is_rejected(missing: str) -> None:
    sent = {name: value for name, value in headers().items() if name != missing}
    assert not verify(SECRET, sent, BODY, now=NOW)


# Fullwidth digits and '²' pass str.isdigit(): verify must refuse them all the same.
FULLWIDTH_TIMESTAMP = "\uff11\uff17" + "\uff10" * 8


@pytest.mark.parametrize("timestamp", ["", "soon", "1.7e9", "-1", FULLWIDTH_TIMESTAMP, "\u00b2"])
def test_non_integer_timestamp_is_rejected(timestamp: str) -> None:
    sent = {
        SIGNATURE_HEADER: "sha256=" + sign(SECRET, timestamp, BODY),
        TIMESTAMP_HEADER: timestamp,
    }
    assert not verify(SECRET, sent, BODY, now=NOW)


def test_idempotency_key_is_per_run_and_state() -> None:
    completed = {"flow_run_id": "3f1c", "state": "COMPLETED", "message": "done"}
    assert idempotency_key(completed) == "3f1c:COMPLETED"
    assert idempotency_key(completed | {"message": "other"}) == "3f1c:COMPLETED"
    assert idempotency_key(completed | {"state": "FAILED"}) == "3f1c:FAILED"
    other = {"event": "x"}
    assert idempotency_key(other) == idempotency_key(dict(other))  # deterministic
    assert idempotency_key(other).startswith("sha256:")


def test_block_accepts_http_urls_only_and_bounds_attempts() -> None:
    secret = SecretStr("s")
    SignedWebhook(url="https://hooks.example.com/x", secret=secret)
    for url in ("ftp://hooks.example.com/x", "hooks.example.com/x", "http://"):
        with pytest.raises(ValidationError):
            SignedWebhook(url=url, secret=secret)
    for attempts in (0, 11):
        with pytest.raises(ValidationError):
            SignedWebhook(url="https://h.example.com", secret=secret, max_attempts=attempts)


def test_block_never_shows_its_secret() -> None:
    webhook = SignedWebhook(url="https://h.example.com", secret=SecretStr("s3cr3t-value"))
    assert "s3cr3t-value" not in repr(webhook) and "s3cr3t-value" not in str(webhook)


def test_block_is_registered_from_the_blocks_package() -> None:
    # `prefect block register -m blocks` registers the Block classes found on the package.
    import blocks

    assert blocks.SignedWebhook is SignedWebhook
    assert SignedWebhook.get_block_type_slug() == "signed-webhook"
