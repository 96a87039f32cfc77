"""The upstreams: the page iterator over a real sandbox, and open_upstreams' errors by name."""

from __future__ import annotations

import httpx
import pytest

from flows.ledger.upstreams import CursorLoop, iter_pages, open_upstreams
from sandbox.server import Sandbox


@pytest.fixture
def records(prefect_server: str, sandbox: Sandbox):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=sandbox.urls["records"], timeout=10) as client:
        yield client


def test_every_page_once_in_order(records: httpx.Client, sandbox: Sandbox) -> None:
    ids = [item["id"] for page in iter_pages(records, 300) for item in page.items]
    assert ids == [record["id"] for record in sandbox.dataset.records]
    assert sum(sandbox.counters()["records"]["page_fetches"].values()) == 4


def test_a_repeated_cursor_ends_the_walk_instead_of_looping(
    records: httpx.Client, sandbox: Sandbox
) -> None:
    sandbox.loop_cursor(at_offset=500, back_to_offset=200)
    walked = []
    with pytest.raises(CursorLoop):
        for page in iter_pages(records, 100):
            walked.append(page)
    assert len(walked) == 5  # offsets 0-400; the sixth cursor was served before


@pytest.mark.usefixtures("sandbox_blocks")
def test_an_unknown_block_is_named_by_its_parameter() -> None:
    expected = pytest.raises(ValueError, match=r"^ledger_api: no HttpService block document")
    with expected, open_upstreams(records_api="sandbox-records", ledger_api="no-such-ledger"):
        pass
