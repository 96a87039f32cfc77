"""A consumer of the message queue: `python -m flows.message_queue_worker --limit 3`.

Scenario
    Items wait in the queue (toolkit/stream_queue.py, on Redis) for consumers on any machine.
    A consumer must do each item as a Prefect task (retries, a task run to see in the UI, its
    result in shared storage), answer the producer, and, if it dies, leave what it held for
    another consumer to take over.

Solution
    One consumer per process, named hostname-pid, holding at most `--limit` items at once,
    each run in a thread of its own by `handle`: the item is set aside at once if it is not a
    work item (its error names the field), or if it has been delivered more often than its
    producer allows (its consumers died each time: it may be
    what kills them); otherwise `process_item` runs, and its end decides the reply: Completed
    is "processed", anything else (the ledger refused it, or its retries ran out) "set-aside"
    with the task's message, copied to the dead-letter stream. While it holds items the
    consumer renews their lease every third of `--lease`: a consumer that dies renews nothing,
    and once the lease has run out another consumer takes its items over (a re-delivery, so
    the ledger replays what the dead one had applied). SIGTERM or Ctrl-C: no new items; those
    held are finished, then it exits. Point it at the producer's Prefect server and result
    storage (PREFECT_API_URL, and PREFECT_RESULTS_LOCAL_STORAGE_PATH or the storage blocks)
    and at the same Redis (RESILIENT_FLOWS_REDIS_URL).

How to run
    python -m flows.message_queue_worker --limit 3 --lease 60
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import redis
from prefect.logging import get_logger
from pydantic import ValidationError

from flows.message_queue_items import (
    Reply,
    WorkItem,
    item_queue,
    process_item,
    worker_id,
)
from toolkit.stream_queue import Delivery, StreamQueue

logger = get_logger("message-queue-worker")


def handle(queue: StreamQueue, delivery: Delivery) -> Reply:
    """Process one delivered item (or set it aside) and answer its producer; the answer."""
    try:
        item = WorkItem.model_validate(delivery.body.get("item"))
        ledger_api = str(delivery.body["ledger_api"])
    except (ValidationError, KeyError) as exc:  # not an item: quarantined, never retried
        raw = delivery.body.get("item")
        item_id = str(raw.get("item_id", delivery.entry_id) if isinstance(raw, dict) else raw)
        return set_aside(queue, delivery, item_id, f"not a work item: {exc}")
    if delivery.verdict == "set-aside":
        error = (
            f"delivered {delivery.deliveries} times, at most {delivery.max_deliveries} "
            "allowed: each consumer holding it died"
        )
        return set_aside(queue, delivery, item.item_id, error)
    state = process_item(item, ledger_api, return_state=True)
    run_id = str(state.state_details.task_run_id or "")
    if state.is_completed():
        reply = Reply(
            item_id=item.item_id,
            status="processed",
            deliveries=delivery.deliveries,
            task_run_id=run_id,
        )
        queue.finish(delivery, reply.model_dump())
        return reply
    return set_aside(queue, delivery, item.item_id, state.message or str(state.name), run_id)


def set_aside(
    queue: StreamQueue, delivery: Delivery, item_id: str, error: str, task_run_id: str = ""
) -> Reply:
    reply = Reply(
        item_id=item_id,
        status="set-aside",
        deliveries=delivery.deliveries,
        task_run_id=task_run_id,
        error=error,
    )
    queue.set_aside(delivery, reply.model_dump())
    return reply


def consume(queue: StreamQueue, limit: int, lease_seconds: float, stop: threading.Event) -> None:
    """Take, process and renew until `stop` is set; then finish what is held."""
    consumer = worker_id()
    queue.join(consumer)
    lease_ms = int(lease_seconds * 1000)
    held: dict[Future[Reply], Delivery] = {}
    renewed = time.monotonic()
    with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="item") as pool:
        while not stop.is_set():
            if len(held) < limit:
                try:
                    taken = queue.take(consumer, limit - len(held), lease_ms, 100 if held else 1000)
                except redis.RedisError as exc:  # Redis restarting: what is held goes on
                    logger.warning("cannot read the queue: %s", exc)
                    stop.wait(1)
                    taken = []
                for delivery in taken:
                    held[pool.submit(handle, queue, delivery)] = delivery
            else:
                wait(held, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in [future for future in held if future.done()]:
                delivery = held.pop(future)
                if future.exception() is not None:  # left pending: taken over after its lease
                    logger.error("item %s failed: %r", delivery.entry_id, future.exception())
            if held and time.monotonic() - renewed >= lease_seconds / 3:
                with contextlib.suppress(redis.RedisError):  # the next round tries again
                    queue.renew(consumer, [delivery.entry_id for delivery in held.values()])
                    renewed = time.monotonic()
        wait(held)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10, help="items held at once (default 10)")
    parser.add_argument(
        "--lease",
        type=float,
        default=60.0,
        help="seconds an item stays with a consumer that stopped renewing it (default 60)",
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    logger.info("consuming %s as %s, %s at a time", item_queue().name, worker_id(), args.limit)
    consume(item_queue(), args.limit, args.lease, stop)


if __name__ == "__main__":
    main()
