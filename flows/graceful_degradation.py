"""Graceful degradation: finish what can be done, and end in a state no one mistakes.

Scenario
    A walk over the records service meets a page that answers 404: the records on it and
    after it cannot be reached. Failing throws away what was counted; completing quietly
    hides the loss.

Solution
    The flow counts what it can and ends through `toolkit.degradation.outcome`: within the
    allowed loss the run is `Degraded` (a Completed-type state with its own name and a
    message), with an event and an alert; above it, the run is Failed.

How to run
    python -c "from flows.graceful_degradation import count_records; print(count_records())"
"""

from __future__ import annotations

from typing import Annotated

import httpx
from prefect import flow
from prefect.states import State
from pydantic import BaseModel, Field

from flows.ledger.upstreams import iter_pages
from toolkit import degradation
from toolkit.services import load_service


class RecordCount(BaseModel):
    pages: int = 0
    records: int = 0
    pages_missing: int = 0


@flow(name="graceful-degradation")
def count_records(
    records_api: str = "sandbox-records",
    page_size: Annotated[int, Field(ge=1, le=500)] = 100,
    max_loss_fraction: Annotated[float, Field(ge=0, le=1)] = 0.2,
) -> RecordCount | State:
    """Count the records of the current snapshot, as far as the service lets us.

    Args:
      records_api: Name of the HttpService block document of the records service.

      page_size: Records per page, from 1 to 500.

      max_loss_fraction: Share of the records that may be lost to a page answering 404, from
        0 to 1, e.g. 0.2 for 20 %; within it the run ends Degraded, above it Failed.
    """
    count = RecordCount()
    with load_service("records_api", records_api).client() as client:
        try:
            for page in iter_pages(client, page_size):
                count.pages += 1
                count.records += len(page.items)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
            count.pages_missing += 1
    lost = count.pages_missing * page_size  # at least: a missing page hides what follows
    why = f"page {count.pages + 1} answered 404" if count.pages_missing else ""
    return degradation.outcome(
        "Record count", count, lost, count.records + lost, max_loss_fraction, why
    )
