"""The message queue's work items, the replies about them, and the task that does the work.

Scenario
    The producer (flows/message_queue.py) submits ledger batches as work items to a queue;
    consumers (flows/message_queue_worker.py) in other processes or on other machines take
    them. An item may be processed twice (its consumer died after the ledger applied it, and
    another took it over), and some items are malformed ("poison"): processing an item twice
    must apply it once, and a poison item must fail at once, with the ledger's reason, not
    after every retry.

Solution
    `process_item` is a Prefect task, run by the consumers. It POSTs the item's batch under
    the batch's Idempotency-Key (`flows.ledger.upstreams.post_batch`, the request `load_batch`
    makes too), so a second delivery is a 200 replay at the ledger, not a second application.
    It retries transient failures with Prefect's task retries (`toolkit.retry.UPSTREAM_RETRY`:
    backoff, at most RESILIENT_FLOWS_UPSTREAM_RETRIES retries, 8 by default) and never a
    permanent one: a 4xx becomes `RejectedItem`, named by `toolkit.retry.describe_failure`.
    Its result (an `ItemResult`) is persisted under `result_key(item_id)` in Prefect's result
    storage, which every process of one setup shares (a local directory on one machine,
    object storage across many): the producer reads it from there. A consumer answers each
    item with a `Reply`; what the producer made of every item is a `QueueSummary`.

How to run
    Consumers run it (python -m flows.message_queue_worker); on its own:
        process_item(build_items(1, 5, "mq")[0], "sandbox-ledger")
    `build_items(12, 5, "mq", malformed=[5])` builds twelve items, the sixth of them poison.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Literal

import httpx
import redis
from prefect import task
from prefect.runtime import task_run as current_task_run
from pydantic import BaseModel, Field

from flows.ledger.models import CENT, Batch, Entry
from flows.ledger.upstreams import post_batch
from toolkit.idempotency import content_hash
from toolkit.retry import UPSTREAM_RETRY, describe_failure, is_transient
from toolkit.services import load_service
from toolkit.stream_queue import StreamQueue

QUEUE = "resilient-flows:message-queue"
"""The Redis stream of the queue's items, in RESILIENT_FLOWS_REDIS_URL."""


def item_queue() -> StreamQueue:
    """The queue, on the Redis of the settings (the circuit breakers' too)."""
    from toolkit.config import settings

    client = redis.Redis.from_url(settings().redis_url, decode_responses=True)
    return StreamQueue(client, QUEUE)


def result_key(item_id: str) -> str:
    """Where an item's `ItemResult` is stored in result storage (the same for every delivery)."""
    return f"message-queue/{item_id}.json"


class WorkItem(BaseModel):
    """One message: a ledger batch, named for the people who read the queue."""

    item_id: str
    batch: Batch


class ItemResult(BaseModel):
    """What a consumer made of an item; persisted in result storage."""

    item_id: str
    batch_id: str
    accepted: int
    replayed: bool  # the ledger had applied this batch before: a re-delivery, or a rerun
    worker: str  # hostname-pid: the consumer's name in the queue
    task_run_id: str


class Reply(BaseModel):
    """A consumer's answer about one item, on the producer's reply stream."""

    item_id: str
    status: Literal["processed", "set-aside"]
    deliveries: int
    task_run_id: str = ""
    error: str = ""


class SetAside(BaseModel):
    """An item the queue gave up on, and why: for a person to fix and resubmit."""

    item_id: str
    batch_id: str
    task_run_id: str  # empty: never run (its consumers died, or it was never taken)
    deliveries: int
    error: str


class QueueSummary(BaseModel):
    submitted: int
    processed: list[str] = Field(description="Item ids whose batch the ledger holds.")
    results: dict[str, ItemResult] = Field(description="Per processed item, from storage.")
    set_aside: list[SetAside]
    redelivered: dict[str, int] = Field(
        description="Item ids delivered more than once (a consumer died holding them), with "
        "their number of deliveries."
    )


class RejectedItem(Exception):
    """The ledger refused the item itself (4xx): a poison item, never retried."""


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@task(
    **UPSTREAM_RETRY,
    persist_result=True,
    result_storage_key="message-queue/{parameters[item].item_id}.json",  # result_key's
    task_run_name="process-{item.item_id}",
)
def process_item(item: WorkItem, ledger_api: str = "sandbox-ledger") -> dict[str, Any]:
    """POST the item's batch under its Idempotency-Key: a second delivery applies nothing.

    Returns an `ItemResult` as plain data, so that reading it back needs no import of this
    module under the name the consumer gave it.
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
            entries[0] = first._replace(amount_eur=first.amount_eur.replace(".", ","))
        items.append(WorkItem(item_id=f"{label}-{i:04d}", batch=Batch.of(entries)))
    return items
