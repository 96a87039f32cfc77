"""HTTP failures as an upstream would raise them, for unit tests with no network."""

from __future__ import annotations

import httpx


def status_error(status: int) -> httpx.HTTPStatusError:
    """The error `checked()` raises for a response with this status."""
    request = httpx.Request("GET", "http://upstream/records")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)
