"""Overlap the waits of a sequential job: a producer run ahead, several calls in flight.

Scenario
    A sync fetches a page, works on it, fetches the next; it posts a batch, waits for the
    answer, posts the next. Most of its time is spent waiting for the network while the CPU
    that would work on the next page sits idle, though nothing about the work needs that
    order: page n + 1 can be on its way while page n is checked, and a ledger that answers
    replays can take several batches at once.

Solution
    Two pieces on threads (the waits are network I/O, which lets the GIL go), each call run in
    a copy of the caller's context, so Prefect's run context and run logger work inside it:

    - `ahead(items, depth)` iterates `items` in a thread, at most `depth` items ahead of the
      consumer (with 1, item n + 1 is produced while the consumer works on item n, and no
      further); an exception there is raised at the consumer, in order, after the items
      before it; leaving the `with` stops the thread and waits for it.
    - `in_flight(items, call, width)` keeps up to `width` calls `call(item)` running and
      yields `(item, result)` as each one ends, in the order they end. After the first
      failure no call starts; the calls in flight end, their results are yielded, then the
      failure is raised. Leaving the `with` waits for the calls in flight.

    Both are context managers, not bare generators, because a generator left by an
    exception is closed only when it is collected: its threads would go on working (and
    using clients already closed) after the caller has moved on.

    Not Prefect's futures (`task.submit`): each would be a task run that the Prefect server
    records, more CPU than the page it carries (flows/ledger/plan.py). Not asyncio: the
    flows, their retries and their httpx clients are synchronous, and one thread per wait is
    cheap at a width of a few.

How to run
    with ahead(fetch_pages(), depth=1) as pages:
        for page in pages: ...
    with in_flight(batches, post, width=4) as answers:
        for batch, receipt in answers: record(batch, receipt)
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()


@contextmanager
def ahead(items: Iterable[T], depth: int) -> Iterator[Iterator[T]]:
    """`items`, each produced in a thread while the consumer works on the ones before it: at
    most `depth` items are produced (or being produced) that the consumer has not taken.
    Leaving the `with` stops the thread and waits for it."""
    if depth < 1:
        yield iter(items)
        return
    handoff: queue.SimpleQueue[tuple[Any, BaseException | None]] = queue.SimpleQueue()
    room = threading.Semaphore(depth)
    stop = threading.Event()

    def produce() -> None:
        source = iter(items)
        try:
            while True:
                while not room.acquire(timeout=0.05):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                item = next(source, _END)
                handoff.put((item, None))
                if item is _END:
                    return
        except BaseException as exc:
            handoff.put((_END, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a generator's own cleanup runs in the thread that ran it

    def consume() -> Iterator[T]:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is _END:
                return
            room.release()  # the next item is produced while this one is worked on
            yield item

    producer = threading.Thread(
        target=contextvars.copy_context().run, args=(produce,), name="ahead", daemon=True
    )
    producer.start()
    try:
        yield consume()
    finally:
        stop.set()
        producer.join()


@contextmanager
def in_flight(
    items: Iterable[T], call: Callable[[T], R], width: int
) -> Iterator[Iterator[tuple[T, R]]]:
    """`(item, call(item))` for each item, up to `width` calls at once, as each one ends.
    Leaving the `with` waits for the calls in flight."""
    with ThreadPoolExecutor(max_workers=max(1, width), thread_name_prefix="in-flight") as pool:
        yield _answers(pool, iter(items), call, max(1, width))


def _answers(
    pool: ThreadPoolExecutor, source: Iterator[T], call: Callable[[T], R], width: int
) -> Iterator[tuple[T, R]]:
    failure: BaseException | None = None
    running: dict[Future[R], T] = {}
    while True:
        while failure is None and len(running) < width:
            item = next(source, _END)
            if item is _END:
                break
            context = contextvars.copy_context()
            running[pool.submit(context.run, call, item)] = item  # type: ignore[arg-type]
        if not running:
            break
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in [f for f in running if f in done]:  # in the order they started
            item = running.pop(future)
            error = future.exception()
            if error is not None:
                failure = failure or error
                continue
            yield item, future.result()
    if failure is not None:
        raise failure
