"""Load the HttpService block documents a flow was given, failing early and by name.

A flow names its upstreams by block document (`records_api="sandbox-records"`). Loading them
all before the first request means an unknown name stops the run before any side effect,
with an error that says which parameter was wrong.
"""

from __future__ import annotations

from blocks.http_service import HttpService


class ParameterError(ValueError):
    """A flow parameter that cannot be used; the message starts with the parameter's name."""


def load_service(parameter: str, block_name: str) -> HttpService:
    try:
        return HttpService.load(block_name)
    except ValueError as exc:
        raise ParameterError(
            f"{parameter}: no HttpService block document named {block_name!r} "
            f"(create one with HttpService(base_url=...).save({block_name!r}))"
        ) from exc
