"""`ahead` and `in_flight`: order, bounds, errors, early exits and the caller's context."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator

import pytest

from toolkit.overlap import ahead, in_flight

who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def test_ahead_yields_every_item_in_order_at_most_depth_ahead() -> None:
    produced: list[int] = []

    def numbers() -> Iterator[int]:
        for n in range(20):
            produced.append(n)
            yield n

    for depth in (1, 2):
        produced.clear()
        taken = []
        with ahead(numbers(), depth=depth) as items:
            for n in items:
                taken.append(n)
                time.sleep(0.005)  # the producer has time to run as far ahead as it may
                assert len(produced) == min(20, len(taken) + depth)

        assert taken == list(range(20))


def test_ahead_raises_the_producers_error_after_the_items_before_it() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("page 3 is broken")

    taken = []
    with pytest.raises(ValueError, match="page 3"), ahead(failing(), depth=1) as items:
        for n in items:
            taken.append(n)
    assert taken == [1, 2]


def test_leaving_ahead_early_stops_and_closes_the_producer() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    with ahead(endless(), depth=1) as items:
        for n in items:
            if n == 3:
                break
    assert closed.is_set()
    assert not [t for t in threading.enumerate() if t.name == "ahead"]


def test_the_producer_and_the_calls_see_the_callers_context() -> None:
    who.set("the flow run")

    def whom() -> Iterator[str]:
        yield who.get()

    with ahead(whom(), depth=1) as items:
        assert list(items) == ["the flow run"]
    with in_flight([1], lambda _: who.get(), width=2) as answers:
        assert list(answers) == [(1, "the flow run")]


def test_in_flight_keeps_at_most_width_calls_running_and_returns_each_once() -> None:
    running, most, lock = 0, 0, threading.Lock()

    def call(n: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return n * n

    with in_flight(range(12), call, width=3) as answers:
        results = dict(answers)

    assert results == {n: n * n for n in range(12)}
    assert most == 3


def test_width_one_calls_one_at_a_time_in_order() -> None:
    order = []
    with in_flight(range(5), order.append, width=1) as answers:
        assert [n for n, _ in answers] == list(range(5))
    assert order == list(range(5))


def test_after_a_failure_no_call_starts_and_those_in_flight_are_yielded() -> None:
    started = []

    def call(n: int) -> int:
        started.append(n)
        if n == 1:
            raise ConnectionError("lost")
        time.sleep(0.05)  # still in flight when call 1 fails
        return n

    yielded = []
    with pytest.raises(ConnectionError), in_flight(range(10), call, width=3) as answers:
        for n, _ in answers:
            yielded.append(n)

    assert sorted(started) == [0, 1, 2]
    assert sorted(yielded) == [0, 2]


def test_leaving_in_flight_by_an_error_waits_for_the_calls_in_flight() -> None:
    ended = []

    def call(n: int) -> int:
        time.sleep(0.02 * (n + 1))
        ended.append(n)
        return n

    with pytest.raises(RuntimeError), in_flight(range(10), call, width=4) as answers:
        for _ in answers:
            raise RuntimeError("the index is down")  # at the first answer: three still run

    assert sorted(ended) == [0, 1, 2, 3]


def test_leaving_ahead_by_an_error_stops_the_producer_at_once() -> None:
    produced = []

    def numbers() -> Iterator[int]:
        for n in range(100):
            produced.append(n)
            yield n

    with pytest.raises(RuntimeError), ahead(numbers(), depth=1) as items:
        for _ in items:
            raise RuntimeError("the checkpoint failed")

    assert len(produced) <= 2
    assert not [t for t in threading.enumerate() if t.name == "ahead"]
