"""SignedWebhook: where a flow run reports how it ended, and the key that proves it sent it.

Scenario: another system (a ledger, a ticketing tool, a partner's API) must learn when a flow
run completes, fails or crashes, and must be able to trust that the message came from us and
was not replayed or altered on the way.

Solution: a Block document per receiver holds its URL, the shared HMAC key (a `SecretStr`, so
it is masked in the UI and never logged), a per-request timeout and a bound on delivery
attempts. `toolkit.callbacks` signs and sends; flows name the document, never the key.

How to run:
    prefect block register -m blocks
    python -c "from pydantic import SecretStr; from blocks import SignedWebhook; \
        SignedWebhook(url='https://hooks.example.com/prefect', secret=SecretStr('...')) \
        .save('callback-webhook', overwrite=True)"
"""

from __future__ import annotations

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator


class SignedWebhook(Block):
    """A webhook that receives HMAC-signed JSON callbacks: URL, key, timeout, attempts."""

    _block_type_name = "Signed Webhook"
    _block_type_slug = "signed-webhook"
    _description = (
        "A webhook receiving HMAC-SHA256 signed callbacks from resilient-flows "
        "(URL, shared key, timeout, bounded retries)."
    )

    url: str = Field(description="Where callbacks are POSTed, e.g. https://hooks.example.com/x")
    secret: SecretStr = Field(
        description="Shared HMAC-SHA256 key; the receiver verifies X-Signature with it."
    )
    timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="Seconds to wait for one delivery attempt."
    )
    max_attempts: int = Field(
        default=4,
        ge=1,
        le=10,
        description="Attempts per callback; only transient failures (5xx, 429, network) retry.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = httpx.URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"url must be an http(s) URL, got {value!r}")
        return value
