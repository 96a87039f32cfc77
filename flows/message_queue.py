"""Message queue: work submitted to a queue, consumers process it, results persisted.

Scenario
    A producer has many independent units of work (here: ledger batches) and should neither do
    them itself nor wait on any one of them. Consumers in other processes, or on other
    machines, take the items one by one, and the producer collects what became of each. Any
    consumer may die mid-item; some items are malformed ("poison") and will never succeed
    and must not block the rest or be retried forever; producers and consumers may talk to
    different Prefect API replicas.

Solution
    The queue is a Redis stream read by a consumer group (toolkit/stream_queue.py), not
    Prefect's background task runs (`.delay()`), because of what Prefect 3.9.1 does with
    those, seen by experiment and in its source (`prefect/server/task_queue.py`, upstream
    #21218, open): the queue of scheduled background runs lives in the memory of the API
    process that scheduled the run, so with two API replicas behind a load balancer an item
    submitted through one is invisible to task workers subscribed to the other; and a worker
    SIGKILLed mid-item leaves its run Running for good, never handed to another worker. Redis
    Streams do both by design, with a lease per delivery and a delivery count, and Redis is
    already there for the circuit breakers. Prefect still does the work and the observing: each item
    is a run of the Prefect task `process_item` (flows/message_queue_items.py: retries,
    Idempotency-Key, its result persisted in shared result storage, a task run in the UI),
    and this producer is a flow with a report.

    `produce_and_gather` ("message-queue") submits every item in one round trip, each with
    the stream this run reads replies on and its most deliveries, then reads the replies of
    the consumers (flows/message_queue_worker.py) until every item is answered:
    - processed: its `ItemResult` is read from result storage, where the consumer's task
      stored it (`result_key`): every process of one setup reads the same storage;
    - set aside, with the error: the ledger refused it (a poison item: 422, never retried),
      its transient retries ran out, or it was delivered more than `max_deliveries` times
      (each consumer holding it died). The rest go on. It is also in the dead-letter stream.
    An item whose consumer died is taken over by another consumer once its lease has run
    out, as a new delivery (`redelivered` in the summary). Whatever is still unanswered after
    `timeout_seconds` is set aside as unfinished.

DELIVERY GUARANTEE: at least once
    An item may be processed more than once (its consumer died after the ledger applied it,
    or stalled past its lease), so its effect must be idempotent: here the ledger's
    Idempotency-Key, a second POST of the same batch is a 200 replay, not a new application.
    A duplicate reply is ignored: the first answer about an item counts.

How to run
    Start consumers (each in its own process, here two, three items at a time each):
        python -m flows.message_queue_worker --limit 3
    With a Prefect server in `PREFECT_API_URL`, Redis in `RESILIENT_FLOWS_REDIS_URL` and the
    `sandbox-ledger` block pointed at a ledger (see README, "Run it on its own"):
        python -m flows.message_queue items=12 malformed=[5]
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Sequence
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import Field

from flows.message_queue_items import (
    ItemResult,
    QueueSummary,
    Reply,
    SetAside,
    WorkItem,
    build_items,
    item_queue,
    result_key,
)
from toolkit.cli import parse_parameters
from toolkit.report import RunReport
from toolkit.services import load_service
from toolkit.stream_queue import StreamQueue


def gather(
    queue: StreamQueue, work: Sequence[WorkItem], reply_to: str, timeout_seconds: float
) -> QueueSummary:
    """Read the consumers' replies until every item is answered or the time is up."""
    logger = get_run_logger()
    replies: dict[str, Reply] = {}
    wanted = {item.item_id for item in work}
    after, deadline = "0-0", time.monotonic() + timeout_seconds
    while wanted - set(replies) and (left := deadline - time.monotonic()) > 0:
        for entry_id, body in queue.replies(reply_to, after, block_ms=int(min(left, 1) * 1000) + 1):
            after, reply = entry_id, Reply.model_validate(body)
            if reply.item_id in wanted and reply.item_id not in replies:  # the first answer
                replies[reply.item_id] = reply
                if reply.status == "set-aside":
                    logger.warning("Item %s set aside: %s", reply.item_id, reply.error)

    results, set_aside = {}, []
    for item in work:
        reply = replies.get(item.item_id)
        error = reply.error if reply else f"unfinished after {timeout_seconds:.0f} s"
        if reply is not None and reply.status == "processed":
            try:
                results[item.item_id] = read_result(item.item_id)
                continue
            except Exception as exc:  # storage not shared with the consumer, likely
                error = f"processed, but its result is unreadable here: {exc!r}"
        set_aside.append(
            SetAside(
                item_id=item.item_id,
                batch_id=item.batch.batch_id,
                task_run_id=reply.task_run_id if reply else "",
                deliveries=reply.deliveries if reply else 0,
                error=error,
            )
        )
    return QueueSummary(
        submitted=len(work),
        processed=list(results),
        results=results,
        set_aside=set_aside,
        redelivered={k: r.deliveries for k, r in replies.items() if r.deliveries > 1},
    )


def read_result(item_id: str) -> ItemResult:
    """The item's result, from the result storage the consumer's task stored it in: the
    default result storage (PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK, else the local path)."""
    from prefect.results import ResultStore, get_default_result_storage

    store = ResultStore(result_storage=get_default_result_storage())
    record = store.read(result_key(item_id))
    return ItemResult.model_validate(record.result)


@flow(name="message-queue")
def produce_and_gather(
    items: Annotated[int, Field(ge=1, le=10_000)] = 12,
    records_per_item: Annotated[int, Field(ge=1, le=500)] = 5,
    label: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")] = "mq",
    malformed: list[Annotated[int, Field(ge=0)]] | None = None,
    ledger_api: str = "sandbox-ledger",
    timeout_seconds: Annotated[float, Field(gt=0, le=86_400)] = 600.0,
    max_deliveries: Annotated[int, Field(ge=1, le=10)] = 3,
) -> QueueSummary:
    """Submit work items to the queue's consumers, gather their results, set poison aside.

    Args:
      items: Work items to submit, from 1 to 10000.

      records_per_item: Ledger entries in each item's batch, from 1 to 500.

      label: Prefix of the record ids: up to 32 lowercase letters, digits and hyphens, not
        starting with a hyphen. The same label and counts build the same batches, so a rerun
        is replayed by the ledger, not applied again.

      malformed: Positions of items to corrupt (0 is the first item): poison items, to see
        them set aside. Empty: none.

      ledger_api: Name of the HttpService block document of the ledger service.

      timeout_seconds: Seconds after which items still unanswered are given up on and set
        aside as unfinished, up to 86400.

      max_deliveries: Deliveries of one item (a consumer died holding it) before it is set
        aside, from 1 to 10.
    """
    logger = get_run_logger()
    load_service("ledger_api", ledger_api)  # an unknown block fails here, before any submission
    work = build_items(items, records_per_item, label, malformed or ())
    queue = item_queue()
    if not queue.consumers():
        logger.warning(
            "No consumer has joined the queue yet: items wait in it until one starts "
            "(python -m flows.message_queue_worker)"
        )
    reply_to = f"{queue.name}:replies:{flow_run.id or uuid.uuid4()}"
    bodies = ({"item": item.model_dump(mode="json"), "ledger_api": ledger_api} for item in work)
    submitted = queue.submit(bodies, reply_to, max_deliveries)
    logger.info("Submitted %s items to %s", submitted, queue.name)
    try:
        summary = gather(queue, work, reply_to, timeout_seconds)
    finally:
        queue.client.delete(reply_to)
    _publish(summary)
    return summary


def _publish(summary: QueueSummary) -> None:
    replayed = sum(result.replayed for result in summary.results.values())
    report = RunReport(
        title="Message queue",
        status="complete" if not summary.set_aside else f"{len(summary.set_aside)} set aside",
        figures={
            "items submitted": summary.submitted,
            "items processed": len(summary.processed),
            "of which replayed by the ledger": replayed,
            "items delivered more than once": len(summary.redelivered),
            "items set aside": len(summary.set_aside),
        },
        table_title="Items set aside" if summary.set_aside else "",
        table=[entry.model_dump() for entry in summary.set_aside],
    )
    report.publish("message-queue")


def main(argv: list[str]) -> int:
    """`python -m flows.message_queue [name=value ...]`: produce, gather, print the summary."""
    summary = produce_and_gather(**parse_parameters(argv))  # values as JSON: malformed=[5]
    print(f"processed {len(summary.processed)} of {summary.submitted} items")
    for entry in summary.set_aside:
        print(f"set aside {entry.item_id}: {entry.error}")
    return 0 if not summary.set_aside else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
