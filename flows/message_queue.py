"""Message queue: work submitted to a queue, task workers process it, results persisted.

Scenario
    A producer has many independent units of work (here: ledger batches) and should neither do
    them itself nor wait on any one of them. Task workers in other processes, or on other
    machines, take the items one by one, and the producer collects what became of each. Any
    worker may die mid-item; some items are malformed and will never succeed ("poison") and
    must not block the rest or be retried forever.

Solution
    `process_item` is a Prefect background task: `process_item.delay(item)` writes the item's
    parameters to result storage and creates a Scheduled task run, which Prefect's server
    pushes to a task worker serving the task. The worker POSTs the item's batch to the ledger
    under the batch's Idempotency-Key (`flows.ledger.upstreams.load_batch`), so applying an
    item twice applies it once; it retries transient failures (`toolkit.retry.UPSTREAM_RETRY`:
    backoff, at most 8 retries) and never a permanent one, and persists its result.

    The producer flow `produce_and_gather` ("message-queue") submits the items, then gathers
    them, polling the states of all its task runs in one API call per round:
    - Completed: the item is processed; its result is read from result storage.
    - Failed or Cancelled (a 422 from the ledger, transient retries used up): the item is SET
      ASIDE with its error, in the returned summary and in a table artifact, and the rest go on.
    - No final state for `stuck_after_seconds` (see the guarantee below): the producer
      re-delivers the same task run, up to `max_deliveries` deliveries in all; after that it
      sets the item aside and marks the run Crashed. Crashed runs are re-delivered the same way.
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
    in line) for that long, is set back to Scheduled with its original parameters, and the
    server pushes it to a live worker. A slow but live item can be re-delivered too (a false
    positive), so `stuck_after_seconds` should exceed the longest silence of one item (one
    attempt, or one retry wait); the price of a false positive is a duplicate execution,
    which the Idempotency-Key absorbs, never a duplicate effect. A run that completed cannot
    be re-delivered (the server refuses to leave a Completed state with a persisted result).

How to run
    Start task workers (each in its own process, here two, three items at a time each):
        prefect task serve --module flows.message_queue --limit 3
        python -m flows.message_queue_worker --limit 3
    With a Prefect server in `PREFECT_API_URL` and the `sandbox-ledger` block pointed at a
    ledger (see README, "Run it on its own"), produce and gather:
        python -m flows.message_queue items=12 malformed=[5]
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

import httpx
from prefect import flow, get_run_logger, task
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId
from prefect.client.schemas.objects import StateType, TaskRun
from prefect.client.schemas.responses import SetStateStatus
from prefect.futures import PrefectDistributedFuture
from prefect.runtime import task_run as current_task_run
from prefect.states import Crashed, Scheduled
from pydantic import BaseModel, Field

from flows.ledger import upstreams
from flows.ledger.models import CENT, Batch, Entry
from toolkit.idempotency import content_hash
from toolkit.report import RunReport
from toolkit.retry import UPSTREAM_RETRY, is_transient
from toolkit.services import load_service

POLL_SECONDS = 0.5
"""How often the producer reads the states of its open items (one API call per 200 items)."""


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


class RejectedItem(Exception):
    """The ledger refused the item itself (4xx): a poison item, never retried."""


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@task(**UPSTREAM_RETRY, persist_result=True, task_run_name="process-{item.item_id}")
def process_item(item: WorkItem, ledger_api: str = "sandbox-ledger") -> dict[str, Any]:
    """POST the item's batch under its Idempotency-Key: a second delivery applies nothing.

    Returns an `ItemResult` as plain data: a worker started from a file path (`prefect task
    serve flows/message_queue.py:process_item`) loads this module under another name, and a
    pickled `ItemResult` would name a module the producer cannot import.
    """
    # The block is loaded per item, not per process: a re-pointed block takes effect at once.
    with load_service("ledger_api", ledger_api).client() as client:
        try:
            # load_batch's own request, without its task wrapper: this task's retries apply.
            receipt = upstreams.load_batch.fn(client, item.batch)
        except httpx.HTTPStatusError as exc:
            if is_transient(exc):
                raise
            # A plain message: httpx errors do not survive the pickling of a failed state.
            raise RejectedItem(
                f"ledger answered {exc.response.status_code}: {_body(exc)}"
            ) from None
    return ItemResult(
        item_id=item.item_id,
        batch_id=receipt.batch_id,
        accepted=receipt.accepted,
        replayed=receipt.replayed,
        worker=worker_id(),
        task_run_id=str(current_task_run.id),
    ).model_dump(mode="json")


def _body(exc: httpx.HTTPStatusError) -> str:
    try:
        return str(exc.response.json().get("error", exc.response.text))
    except ValueError:
        return exc.response.text[:200]


# -- the producer -----------------------------------------------------------------------------


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


@dataclass
class _Open:
    """An item submitted and not yet resolved, as the producer tracks it."""

    item: WorkItem
    future: PrefectDistributedFuture[dict[str, Any]]
    seq: int  # position in the queue: submission order, renewed by each re-delivery
    since: float  # monotonic time the current state was first seen, or the clock started
    state_id: UUID | None = None
    deliveries: int = 1
    suspect: bool = False  # a Scheduled run whose clock is running (see _queued_suspects)

    @property
    def task_run_id(self) -> UUID:
        return self.future.task_run_id


def _is_queued(state: Any) -> bool:
    # AwaitingRetry is Scheduled-type too, but it waits inside a worker, not in the queue.
    return state is not None and state.type == StateType.SCHEDULED and state.name == "Scheduled"


def _read_runs(client: SyncPrefectClient, ids: Sequence[UUID]) -> dict[UUID, TaskRun]:
    runs: dict[UUID, TaskRun] = {}
    for start in range(0, len(ids), 200):
        chunk = list(ids[start : start + 200])
        found = client.read_task_runs(
            task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=chunk)), limit=len(chunk)
        )
        runs.update({run.id: run for run in found})
    return runs


def _redeliver(client: SyncPrefectClient, task_run_id: UUID, reason: str) -> bool:
    """Put the same task run back in the queue, with the parameters it was submitted with."""
    history = client.read_task_run_states(task_run_id)
    parameters_id = next(
        (s.state_details.task_parameters_id for s in history if s.state_details.task_parameters_id),
        None,
    )
    state = Scheduled(message=f"re-delivered by the producer: {reason}")
    # `deferred` routes the transition through Prefect's background-task rules, which enqueue
    # the run for a task worker (and refuse to leave Completed: no re-run of a finished item).
    state.state_details.deferred = True
    state.state_details.task_parameters_id = parameters_id
    answer = client.set_task_run_state(task_run_id, state, force=True)
    return answer.status == SetStateStatus.ACCEPT


def gather(
    items: Sequence[WorkItem],
    futures: Sequence[PrefectDistributedFuture[dict[str, Any]]],
    timeout_seconds: float,
    stuck_after_seconds: float,
    max_deliveries: int,
) -> QueueSummary:
    """Wait for every item to be processed or set aside, re-delivering stuck ones."""
    logger = get_run_logger()
    now = time.monotonic()
    deadline = now + timeout_seconds
    pending = {
        f.task_run_id: _Open(item=i, future=f, seq=n, since=now)
        for n, (i, f) in enumerate(zip(items, futures, strict=True))
    }
    next_seq = len(items)
    frontier = -1  # the latest queue position seen out of the queue (see _queued_suspects)
    results: dict[str, ItemResult] = {}
    set_aside: dict[str, SetAside] = {}
    redelivered: dict[str, int] = {}

    def give_up(entry: _Open, error: str) -> None:
        logger.warning("Setting item %s aside: %s", entry.item.item_id, error)
        set_aside[entry.item.item_id] = SetAside(
            item_id=entry.item.item_id,
            batch_id=entry.item.batch.batch_id,
            task_run_id=str(entry.task_run_id),
            deliveries=entry.deliveries,
            error=error,
        )
        del pending[entry.task_run_id]

    with get_client(sync_client=True) as client:
        while pending:
            runs = _read_runs(client, list(pending))
            now = time.monotonic()
            stuck: list[tuple[_Open, str]] = []
            for entry in list(pending.values()):
                state = runs[entry.task_run_id].state if entry.task_run_id in runs else None
                if state is not None and state.id != entry.state_id:
                    entry.state_id, entry.since, entry.suspect = state.id, now, False
                if state is not None and not _is_queued(state):
                    frontier = max(frontier, entry.seq)
                if state is None or not state.is_final():
                    continue
                if state.is_completed():
                    try:  # the worker's result, read back from result storage
                        result = ItemResult.model_validate(entry.future.result())
                    except Exception as exc:  # storage not shared with the worker, most likely
                        give_up(entry, f"processed, but its result is unreadable here: {exc!r}")
                        continue
                    results[entry.item.item_id] = result
                    del pending[entry.task_run_id]
                elif state.is_crashed():
                    stuck.append((entry, f"its run crashed: {state.message}"))
                else:
                    give_up(entry, state.message or state.name or "failed")
            for entry in _queued_suspects(pending.values(), runs, frontier, now):
                if now - entry.since > stuck_after_seconds:
                    stuck.append((entry, f"still queued after {stuck_after_seconds:g} s"))
            for entry in pending.values():
                run = runs.get(entry.task_run_id)
                started = run is not None and run.state is not None and not _is_queued(run.state)
                if started and not run.state.is_final() and now - entry.since > stuck_after_seconds:
                    name = run.state.name
                    stuck.append((entry, f"no new state for {stuck_after_seconds:g} s ({name})"))
            for entry, reason in stuck:
                if entry.deliveries >= max_deliveries:
                    give_up(entry, f"{reason}, after {entry.deliveries} deliveries")
                    client.set_task_run_state(
                        entry.task_run_id, Crashed(message=f"set aside: {reason}"), force=True
                    )
                elif _redeliver(client, entry.task_run_id, reason):
                    entry.deliveries += 1
                    entry.seq, next_seq = next_seq, next_seq + 1
                    entry.state_id, entry.since, entry.suspect = None, now, False
                    redelivered[entry.item.item_id] = entry.deliveries
                    logger.warning(
                        "Re-delivered item %s (delivery %s): %s",
                        entry.item.item_id,
                        entry.deliveries,
                        reason,
                    )
            if pending and time.monotonic() > deadline:
                for entry in list(pending.values()):
                    run = runs.get(entry.task_run_id)
                    last = run.state.name if run is not None and run.state else "unknown"
                    give_up(entry, f"no final state within {timeout_seconds:g} s (last: {last})")
            if pending:
                time.sleep(POLL_SECONDS)

    processed = [i.item_id for i in items if i.item_id in results]
    return QueueSummary(
        submitted=len(items),
        processed=processed,
        results={item_id: results[item_id] for item_id in processed},
        set_aside=[set_aside[i.item_id] for i in items if i.item_id in set_aside],
        redelivered=redelivered,
    )


def _queued_suspects(
    pending: Iterable[_Open], runs: dict[UUID, TaskRun], frontier: int, now: float
) -> list[_Open]:
    """Scheduled runs whose wait should end soon, with their clocks started.

    The server's queue is first in, first out, and `frontier` is the latest queue position
    (`seq`) of ours seen out of it. A run still Scheduled behind the frontier was pushed to a
    worker that has not started it: one that died holding it, or a live one waiting for a
    free slot. The first of ours still in line waits at most for a free slot (or was pushed to
    a worker that died). Either is stuck once its clock passes `stuck_after_seconds`. Any other
    Scheduled run is waiting its turn behind ours: its clock does not run.
    """
    queued = [e for e in pending if (r := runs.get(e.task_run_id)) and _is_queued(r.state)]
    first = min((e.seq for e in queued), default=None)
    suspects = []
    for entry in queued:
        if entry.seq < frontier or entry.seq == first:
            if not entry.suspect:
                entry.suspect, entry.since = True, now
            suspects.append(entry)
    return suspects


# -- work items and the flow ------------------------------------------------------------------


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


@flow(name="message-queue")
def produce_and_gather(
    items: Annotated[int, Field(ge=1, le=10_000, description="Work items to submit.")] = 12,
    records_per_item: Annotated[
        int, Field(ge=1, le=500, description="Ledger entries in each item's batch.")
    ] = 5,
    label: Annotated[
        str,
        Field(
            pattern=r"^[a-z0-9][a-z0-9-]{0,31}$",
            description="Prefix of the record ids. The same label and counts build the same "
            "batches, so a rerun is replayed by the ledger, not applied again.",
        ),
    ] = "mq",
    malformed: Annotated[
        list[Annotated[int, Field(ge=0)]] | None,
        Field(description="Positions of items to corrupt (poison items, to see them set aside)."),
    ] = None,
    ledger_api: Annotated[str, Field(description="Ledger HttpService block.")] = "sandbox-ledger",
    timeout_seconds: Annotated[
        float, Field(gt=0, le=86_400, description="Give up on items still open after this.")
    ] = 600.0,
    stuck_after_seconds: Annotated[
        float,
        Field(
            ge=1,
            le=3_600,
            description="Re-deliver an item after this long with no progress; keep it above "
            "the longest time one item may legitimately take.",
        ),
    ] = 60.0,
    max_deliveries: Annotated[
        int, Field(ge=1, le=10, description="Deliveries of one item before it is set aside.")
    ] = 3,
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
            "(prefect task serve --module flows.message_queue)"
        )
    started = time.monotonic()
    futures = [process_item.delay(item, ledger_api) for item in work]
    logger.info("Submitted %s items in %.1f s", len(futures), time.monotonic() - started)
    summary = gather(work, futures, timeout_seconds, stuck_after_seconds, max_deliveries)
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
    parameters: dict[str, Any] = {}
    for arg in argv:
        name, _, value = arg.partition("=")
        try:
            parameters[name] = json.loads(value)  # numbers and lists, e.g. malformed=[5]
        except ValueError:
            parameters[name] = value
    summary = produce_and_gather(**parameters)
    print(f"processed {len(summary.processed)} of {summary.submitted} items")
    for entry in summary.set_aside:
        print(f"set aside {entry.item_id}: {entry.error}")
    return 0 if not summary.set_aside else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
