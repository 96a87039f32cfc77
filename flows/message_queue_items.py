"""The message queue's work items, what became of them, and the task that task workers run.

Scenario
    The producer (flows/message_queue.py) submits ledger batches as work items to Prefect task
    workers in other processes or on other machines. A worker may get an item twice (the
    producer re-delivers items that stopped moving), and some items are malformed ("poison"):
    applying an item twice must apply it once, and a poison item must fail at once, with the
    ledger's reason, not after every retry.

Solution
    `process_item` is a Prefect background task. It POSTs the item's batch under the batch's
    Idempotency-Key (`flows.ledger.upstreams.post_batch`, the request `load_batch` makes too),
    so a second delivery is a 200 replay at the ledger, not a second application. It retries
    transient failures with Prefect's task retries (`toolkit.retry.UPSTREAM_RETRY`: backoff, at
    most as many retries as the RESILIENT_FLOWS_UPSTREAM_RETRIES setting, 8 by default) and
    never a permanent one: a 4xx becomes `RejectedItem`, named by
    `toolkit.retry.describe_failure`. Its result (an `ItemResult`) is persisted, for the
    producer to read from result storage; what the producer made of every item is a
    `QueueSummary` (processed, `SetAside`, re-delivered).

How to run
    Task workers serve it (each in its own process, here three items at a time each):
        python -m flows.message_queue_worker --limit 3
        prefect task serve --module flows.message_queue_items --limit 3
    The producer submits items with `process_item.delay(item, ledger_api)`;
    `build_items(12, 5, "mq", malformed=[5])` builds twelve items, the sixth of them poison.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import httpx
from prefect import task
from prefect.client.orchestration import get_client
from prefect.runtime import task_run as current_task_run
from pydantic import BaseModel, Field

from flows.ledger.models import CENT, Batch, Entry
from flows.ledger.upstreams import post_batch
from toolkit.idempotency import content_hash
from toolkit.retry import UPSTREAM_RETRY, describe_failure, is_transient
from toolkit.services import load_service


class WorkItem(BaseModel):
    """One message: a ledger batch, named for the people who read the queue."""

    item_id: str
    batch: Batch


class ItemResult(BaseModel):
    """What a task worker made of an item; persisted in result storage."""

    item_id: str
    batch_id: str
    accepted: int
    replayed: bool  # the ledger had applied this batch before: a re-delivery, or a rerun
    worker: str  # hostname-pid, as Prefect names task workers
    task_run_id: str


class SetAside(BaseModel):
    """An item the queue gave up on, and why: for a person to fix and resubmit."""

    item_id: str
    batch_id: str
    task_run_id: str
    deliveries: int
    error: str


class QueueSummary(BaseModel):
    submitted: int
    processed: list[str] = Field(description="Item ids whose batch the ledger holds.")
    results: dict[str, ItemResult] = Field(description="Per processed item, from storage.")
    set_aside: list[SetAside]
    redelivered: dict[str, int] = Field(
        description="Item ids the producer re-delivered, with their number of deliveries."
    )


class RejectedItem(Exception):
    """The ledger refused the item itself (4xx): a poison item, never retried."""


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@task(**UPSTREAM_RETRY, persist_result=True, task_run_name="process-{item.item_id}")
def process_item(item: WorkItem, ledger_api: str = "sandbox-ledger") -> dict[str, Any]:
    """POST the item's batch under its Idempotency-Key: a second delivery applies nothing.

    Returns an `ItemResult` as plain data: a worker started from a file path (`prefect task
    serve flows/message_queue_items.py:process_item`) loads this module under another name,
    and a pickled `ItemResult` would name a module the producer cannot import.
    """
    # The block is loaded per item, not per process: a re-pointed block takes effect at once.
    with load_service("ledger_api", ledger_api).client() as client:
        try:
            receipt = post_batch(client, item.batch)  # this task's retries apply
        except httpx.HTTPStatusError as exc:
            if is_transient(exc):
                raise
            # A plain message: httpx errors do not survive the pickling of a failed state.
            raise RejectedItem(f"the ledger refused it: {describe_failure(exc)}") from None
    return ItemResult(
        item_id=item.item_id,
        batch_id=receipt.batch_id,
        accepted=receipt.accepted,
        replayed=receipt.replayed,
        worker=worker_id(),
        task_run_id=str(current_task_run.id),
    ).model_dump(mode="json")


def build_items(
    count: int, records_per_item: int, label: str, malformed: Iterable[int] = ()
) -> list[WorkItem]:
    """Synthetic batches with record ids, accounts and EUR amounts, the same for the same args.

    Items at the `malformed` positions carry a decimal comma in their first amount, which the
    ledger refuses with 422: poison items.
    """
    bad = set(malformed)
    items = []
    for i in range(count):
        entries = []
        for j in range(records_per_item):
            record_id = f"{label}-{i:04d}-{j:03d}"
            cents = int(content_hash(record_id, length=8), 16) % 100_000 + 1
            amount = (Decimal(cents) * CENT).quantize(CENT)
            entries.append(
                Entry(record_id=record_id, account=f"acc-{cents % 23}", amount_eur=f"{amount}")
            )
        if i in bad:
            first = entries[0]
            entries[0] = first.model_copy(update={"amount_eur": first.amount_eur.replace(".", ",")})
        items.append(WorkItem(item_id=f"{label}-{i:04d}", batch=Batch.of(entries)))
    return items


def live_task_workers(task_key: str) -> list[str]:
    """Ids (hostname-pid) of the task workers the server sees subscribed to `task_key`."""
    with get_client(sync_client=True) as client:
        response = client.request(
            "POST", "/task_workers/filter", json={"task_worker_filter": {"task_keys": [task_key]}}
        )
        response.raise_for_status()
        return sorted(worker["identifier"] for worker in response.json())
