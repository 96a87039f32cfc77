"""Where a run's time goes: the wall time of the thread doing the work, split by phase.

Scenario
    A sync is slower than a bare script doing the same HTTP work, and the question is which
    part of it. A profiler tells which functions use the CPU, not how long the run sat
    waiting for the network, nor whether overlapping the waits hid them; and a profiled run
    is not the run a user runs.

Solution
    `phase(name)` adds the wall time of a block to its phase; `waits(name, items)` adds each
    wait for the next item of an iterator (the next page, the next answer). A phase inside
    another counts once, in the inner one, so the phases add up to at most the wall time.
    It costs a `perf_counter` pair per block, which no page notices, so it is always on; a
    sync returns its phases in its summary. Main-thread only: the threads that fetch and post
    ahead (toolkit/overlap.py) are what the waits measure.

How to run
    watch = Stopwatch()
    with watch.phase("claim"):
        claim(page)
    for page in watch.waits("GET wait", pages): ...
    watch.seconds  # {"claim": 0.012, "GET wait": 0.034}
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import TypeVar

T = TypeVar("T")


class Stopwatch:
    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._inner: list[float] = []  # per open phase: the time of the phases inside it

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._inner.append(0.0)
        started = perf_counter()
        try:
            yield
        finally:
            elapsed = perf_counter() - started
            self.seconds[name] += elapsed - self._inner.pop()
            if self._inner:
                self._inner[-1] += elapsed

    def waits(self, name: str, items: Iterable[T]) -> Iterator[T]:
        """`items`, the time spent getting each one added to phase `name`."""
        source = iter(items)
        while True:
            with self.phase(name):
                item = next(source, _END)
            if item is _END:
                return
            yield item  # type: ignore[misc]


_END = object()
