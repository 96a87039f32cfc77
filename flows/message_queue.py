"""Message queue: work submitted to a queue, task workers process it, results persisted.

Scenario
    A producer has many independent units of work (here: ledger batches) and should neither do
    them itself nor wait on any one of them. Task workers in other processes, or on other
    machines, take the items one by one, and the producer collects what became of each. Any
    worker may die mid-item; some items are malformed and will never succeed ("poison") and
    must not block the rest or be retried forever.

Solution
    `process_item.delay(item)` (flows/message_queue_items.py) stores the item's parameters and
    creates a Scheduled background task run, which Prefect's server pushes to a task worker.
    The worker POSTs the item's batch under its Idempotency-Key (applying an item twice
    applies it once), retries transient failures only, and persists its result.

    The producer flow `produce_and_gather` ("message-queue") submits the items, then gathers
    them, polling the states of all its task runs in one API call per round (per 200 items).
    What becomes of each item is decided by `toolkit.redelivery.decide`, a pure function:
    - Completed: the item is processed; its result is read from result storage.
    - Failed or Cancelled (a 422 from the ledger, transient retries used up): the item is SET
      ASIDE with its error, in the returned summary and in a table artifact, and the rest go on.
    - Stuck (see the guarantee below; a Crashed run is stuck too): the producer delivers the
      item again, up to `max_deliveries` deliveries in all; after that it sets the item aside
      and marks its run Crashed.
    Whatever is still open after `timeout_seconds` is set aside as unfinished.

    Result storage must be readable by every process: on one machine the default local path
    (`PREFECT_RESULTS_LOCAL_STORAGE_PATH`) does; across machines, give the producer and every
    worker the same remote storage blocks, `PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK` for results
    and `PREFECT_TASKS_SCHEDULING_DEFAULT_STORAGE_BLOCK` for the items' parameters.

DELIVERY GUARANTEE: at least once
    An item may be executed more than once, so its effect must be idempotent (here: the
    ledger's Idempotency-Key; a second POST of the same batch is a 200 replay, not a new
    application). What Prefect 3.9.1 itself does, seen by experiment and in its source
    (`prefect/server/api/task_runs.py`, `task_queue.py`, `task_worker.py`):
    - the server keeps scheduled background runs in an in-memory queue per task and pushes
      each one to one subscribed worker, which acknowledges it on receipt; from then on the
      server keeps no lease and expects no heartbeat from the worker;
    - a worker SIGKILLed mid-item leaves that task run Running for good (seen still Running
      5 minutes later, two other workers subscribed and idle); Prefect never re-delivers it;
    - a worker at its `limit` still receives and acknowledges one more run and holds it until
      a slot frees: if it dies, that run stays Scheduled for good, also never re-delivered;
    - runs pushed to a worker whose connection broke before it acknowledged them go back to
      the queue and are delivered to another worker.
    So the producer re-delivers: a run with no new state for `stuck_after_seconds`, or a
    Scheduled run that later items of this producer have overtaken (or that has been first
    in line) for that long. A slow but live item can be re-delivered too (a false positive),
    so `stuck_after_seconds` should exceed the longest silence of one item (one attempt, or
    one retry wait); the price of a false positive is a duplicate execution, which the
    Idempotency-Key absorbs, never a duplicate effect.

RE-DELIVERY THROUGH PREFECT'S PUBLIC API
    The producer ends a stuck run with `client.set_task_run_state(run_id, Crashed(...))`,
    without `force`: the server's own rules refuse to crash a run that has just finished, and
    that item is read as it ended, not re-delivered. Then it submits the item again with
    `process_item.delay`: a new task run, queued like any other. The public path costs a task
    run per re-delivery (the replaced one Crashed, saying why) and a second copy of the item's
    parameters; a replaced run that a live worker holds may still run (the server lets a run
    leave Crashed for Running): a duplicate execution, as above.

How to run
    Start task workers (each in its own process, here two, three items at a time each):
        python -m flows.message_queue_worker --limit 3
        prefect task serve --module flows.message_queue_items --limit 3
    With a Prefect server in `PREFECT_API_URL` and the `sandbox-ledger` block pointed at a
    ledger (see README, "Run it on its own"), produce and gather:
        python -m flows.message_queue items=12 malformed=[5]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Annotated, Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId
from prefect.client.schemas.objects import State
from prefect.client.schemas.responses import SetStateStatus
from prefect.futures import PrefectDistributedFuture
from prefect.states import Crashed
from pydantic import Field

from flows.message_queue_items import (
    ItemResult,
    QueueSummary,
    SetAside,
    WorkItem,
    build_items,
    live_task_workers,
    process_item,
)
from toolkit.cli import parse_parameters
from toolkit.redelivery import Done, GiveUp, Queue, Redeliver, Rules, decide
from toolkit.report import RunReport
from toolkit.services import load_service

POLL_SECONDS = 0.5
"""How often the producer reads the states of its open items (one API call per 200 items)."""


def gather(
    work: Sequence[WorkItem],
    futures: Sequence[PrefectDistributedFuture[dict[str, Any]]],
    rules: Rules,
    ledger_api: str,
) -> QueueSummary:
    """Wait for every item to be processed or set aside, re-delivering stuck ones: the I/O
    around `toolkit.redelivery.decide`, which decides."""
    logger = get_run_logger()
    items = {item.item_id: item for item in work}
    submitted = [(i.item_id, f.task_run_id) for i, f in zip(work, futures, strict=True)]
    queue = Queue.start(submitted, now=time.monotonic())
    results: dict[str, ItemResult] = {}
    set_aside: dict[str, SetAside] = {}
    redelivered: dict[str, int] = {}

    def put_aside(key: str, run_id: UUID, deliveries: int, error: str) -> None:
        logger.warning("Setting item %s aside: %s", key, error)
        batch_id = items[key].batch.batch_id
        set_aside[key] = SetAside(
            item_id=key,
            batch_id=batch_id,
            task_run_id=str(run_id),
            deliveries=deliveries,
            error=error,
        )

    with get_client(sync_client=True) as client:
        while queue.open:
            states = _read_states(client, queue.run_ids())
            queue, actions = decide(queue, states, time.monotonic(), rules)
            for action in actions:
                match action:
                    case Done(key, run_id, deliveries):
                        try:  # the worker's result, read back from result storage
                            future = PrefectDistributedFuture[dict[str, Any]](run_id)
                            results[key] = ItemResult.model_validate(future.result())
                        except Exception as exc:  # storage not shared with the worker, likely
                            error = f"processed, but its result is unreadable here: {exc!r}"
                            put_aside(key, run_id, deliveries, error)
                    case GiveUp(key, run_id, deliveries, error, retire):
                        if retire:
                            retire_run(client, run_id, f"set aside: {error}")
                        put_aside(key, run_id, deliveries, error)
                    case Redeliver(key, run_id, delivery, reason, retire):
                        if retire and not retire_run(client, run_id, f"re-delivered: {reason}"):
                            continue  # it has just finished: read as it ended, next round
                        future = process_item.delay(items[key], ledger_api)
                        queue = queue.redelivered(key, future.task_run_id, time.monotonic())
                        redelivered[key] = delivery
                        logger.warning(
                            "Re-delivered item %s (delivery %s): %s", key, delivery, reason
                        )
            if queue.open:
                time.sleep(POLL_SECONDS)

    processed = [i.item_id for i in work if i.item_id in results]
    return QueueSummary(
        submitted=len(work),
        processed=processed,
        results={item_id: results[item_id] for item_id in processed},
        set_aside=[set_aside[i.item_id] for i in work if i.item_id in set_aside],
        redelivered=redelivered,
    )


def _read_states(client: SyncPrefectClient, ids: Sequence[UUID]) -> dict[UUID, State | None]:
    states: dict[UUID, State | None] = {}
    for start in range(0, len(ids), 200):
        chunk = list(ids[start : start + 200])
        found = client.read_task_runs(
            task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=chunk)), limit=len(chunk)
        )
        states.update({run.id: run.state for run in found})
    return states


def retire_run(client: SyncPrefectClient, run_id: UUID, message: str) -> bool:
    """Mark a run no one will wait for Crashed; False if the server refused: it has finished."""
    answer = client.set_task_run_state(run_id, Crashed(message=message))
    return answer.status == SetStateStatus.ACCEPT


@flow(name="message-queue")
def produce_and_gather(
    items: Annotated[int, Field(ge=1, le=10_000)] = 12,
    records_per_item: Annotated[int, Field(ge=1, le=500)] = 5,
    label: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")] = "mq",
    malformed: list[Annotated[int, Field(ge=0)]] | None = None,
    ledger_api: str = "sandbox-ledger",
    timeout_seconds: Annotated[float, Field(gt=0, le=86_400)] = 600.0,
    stuck_after_seconds: Annotated[float, Field(ge=1, le=3_600)] = 60.0,
    max_deliveries: Annotated[int, Field(ge=1, le=10)] = 3,
) -> QueueSummary:
    """Submit work items to task workers, gather their results, set poison items aside.

    Args:
      items: Work items to submit, from 1 to 10000.

      records_per_item: Ledger entries in each item's batch, from 1 to 500.

      label: Prefix of the record ids: up to 32 lowercase letters, digits and hyphens, not
        starting with a hyphen. The same label and counts build the same batches, so a rerun
        is replayed by the ledger, not applied again.

      malformed: Positions of items to corrupt (0 is the first item): poison items, to see
        them set aside. Empty: none.

      ledger_api: Name of the HttpService block document of the ledger service.

      timeout_seconds: Seconds after which items still open are given up on and set aside as
        unfinished, up to 86400.

      stuck_after_seconds: Seconds with no progress after which an item is re-delivered, from
        1 to 3600; keep it above the longest time one item may legitimately take.

      max_deliveries: Deliveries of one item before it is set aside, from 1 to 10.
    """
    logger = get_run_logger()
    load_service("ledger_api", ledger_api)  # an unknown block fails here, before any submission
    work = build_items(items, records_per_item, label, malformed or ())
    if not live_task_workers(process_item.task_key):
        logger.warning(
            "No task worker serves process_item yet: items wait in the queue until one starts "
            "(python -m flows.message_queue_worker)"
        )
    started = time.monotonic()
    futures = [process_item.delay(item, ledger_api) for item in work]
    logger.info("Submitted %s items in %.1f s", len(futures), time.monotonic() - started)
    rules = Rules(stuck_after_seconds, max_deliveries, timeout_seconds)
    summary = gather(work, futures, rules, ledger_api)
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
            "items re-delivered by the producer": len(summary.redelivered),
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
