"""Naive Prefect: the ledger sync as it is often first written, one task run per record.

Scenario
    The obvious first Prefect version of the sync: page through the records in a flow and
    call a task for each record that converts it and posts it, with Prefect's defaults
    everywhere (the default cache policy included). The flagship is measured against it at
    10,000 records.

Solution
    `naive_sync` pages with httpx; `load_record`, a task with Prefect's defaults, converts one
    record with the flagship's own `convert` (flows/ledger/models.py) and POSTs it to the
    ledger as a batch of one, under an Idempotency-Key of its id; an invalid record is
    skipped. The same pages and conversion as the flagship, one POST per valid record, no
    checkpoints.

How to run
    python -m benchmarks.naive_prefect '{"records": URL, "rates": URL, "ledger": URL}'
    (benchmarks/whole_process.py runs it against its sandbox, at its smallest size of 10,000
    records or more.)
"""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx
from prefect import flow, task

from flows.ledger.models import Rates, convert


@task
def load_record(ledger_url: str, record: dict[str, Any], rates: dict[str, Any]) -> int:
    """Convert one record and post it alone; 1 if it was loaded, 0 if it is invalid."""
    entries = convert([record], Rates.model_validate(rates)).entries
    if not entries:
        return 0
    entry = entries[0]._asdict()
    batch = {"batch_id": f"naive-{entry['record_id']}", "entries": [entry]}
    response = httpx.post(
        f"{ledger_url}/ledger/batches",
        json=batch,
        headers={"Idempotency-Key": batch["batch_id"]},
        timeout=30,
    )
    response.raise_for_status()
    return 1


@flow
def naive_sync(urls: dict[str, str], page_size: int = 500) -> int:
    """Every record of the current snapshot, each through `load_record`."""
    loaded = 0
    with httpx.Client(timeout=30) as client:
        rates = client.get(f"{urls['rates']}/rates", params={"base": "EUR"}).json()
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
            page = client.get(f"{urls['records']}/records", params=params).json()
            for record in page["items"]:
                loaded += load_record(urls["ledger"], record, rates)
            cursor = page["next_cursor"]
            if not cursor:
                return loaded


if __name__ == "__main__":
    naive_sync(json.loads(sys.argv[1]))
