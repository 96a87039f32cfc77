"""HttpService: the one way a flow reaches an upstream HTTP service.

Scenario: the same flow must talk to the project's sandbox while developing, to a staging
service in CI and to production on a shared server, without a code change.

Solution: a Block document per upstream holds its base URL, timeouts, an optional bearer
token (a `SecretStr`, so it is masked in the UI and never logged) and extra headers, and
hands out a configured `httpx.Client`. Flows take the *name* of a block document as a
parameter; pointing a flow elsewhere means saving another document.

How to run:
    prefect block register -m blocks
    python -c "from blocks import HttpService; \
        HttpService(base_url='http://127.0.0.1:8000').save('my-records', overwrite=True)"
"""

from __future__ import annotations

import ssl
from functools import cache

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator


class HttpService(Block):
    """An upstream HTTP service: base URL, timeouts, optional bearer token and headers."""

    _block_type_name = "HTTP Service"
    _block_type_slug = "http-service"
    _description = "An upstream HTTP service reached by resilient-flows (base URL, timeouts, auth)."

    base_url: str = Field(description="Base URL, e.g. https://records.example.com/v1")
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to open a connection.")
    read_timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for an answer.")
    bearer_token: SecretStr | None = Field(
        default=None, description="Sent as 'Authorization: Bearer <token>' when set."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = httpx.URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    def client(self) -> httpx.Client:
        """A client bound to this service; the caller closes it (use it as a context manager)."""
        headers = dict(self.headers)
        if self.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.bearer_token.get_secret_value()}"
        timeout = httpx.Timeout(self.read_timeout, connect=self.connect_timeout)
        verify = tls_context() if self.base_url.startswith("https:") else no_tls_context()
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, verify=verify)


@cache
def tls_context() -> ssl.SSLContext:
    """The certificate store httpx would load for each client (tens of ms), loaded once."""
    return httpx.create_ssl_context()


@cache
def no_tls_context() -> ssl.SSLContext:
    """For a plain-http service: verifying, with no certificate to trust, so a TLS request
    (an absolute https URL) fails verification rather than going unchecked."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
