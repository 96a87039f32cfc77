"""Load the HttpService block documents a flow was given, failing early and by name.

A flow names its upstreams by block document (`records_api="sandbox-records"`). Loading them
all before the first request means an unknown name stops the run before any side effect,
with an error that says which parameter was wrong. `load_services` loads several at once,
over one Prefect client: each load is a round trip to the server, and a run pays them all
before its first record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from blocks.http_service import HttpService


class ParameterError(ValueError):
    """A flow parameter that cannot be used; the message starts with the parameter's name."""


def load_service(parameter: str, block_name: str) -> HttpService:
    return load_services({parameter: block_name})[parameter]


def load_services(named: Mapping[str, str]) -> dict[str, HttpService]:
    """The document of each `{parameter: block name}`, loaded concurrently; the first unknown
    name (in the mapping's order) is a `ParameterError` naming its parameter."""
    from prefect.client.orchestration import get_client
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def load_all() -> list[HttpService | BaseException]:
        async with get_client() as client:
            loads = (HttpService.aload(name, client=client) for name in named.values())
            return await asyncio.gather(*loads, return_exceptions=True)

    loaded = dict(zip(named, run_coro_as_sync(load_all()), strict=True))
    for parameter, service in loaded.items():
        if isinstance(service, ValueError):
            raise ParameterError(
                f"{parameter}: no HttpService block document named {named[parameter]!r} "
                f"(create one with HttpService(base_url=...).save({named[parameter]!r}))"
            ) from service
        if isinstance(service, BaseException):
            raise service
    return loaded  # type: ignore[return-value]
