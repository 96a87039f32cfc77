"""The stopwatch: phases add up, a nested phase counts once, waits time each next item."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from toolkit.stopwatch import Stopwatch


def test_a_phase_adds_its_wall_time_every_time() -> None:
    watch = Stopwatch()
    for _ in range(3):
        with watch.phase("claim"):
            time.sleep(0.01)
    assert 0.03 <= watch.seconds["claim"] < 0.06


def test_a_phase_inside_another_counts_once_in_the_inner_one() -> None:
    watch = Stopwatch()
    with watch.phase("outer"):
        time.sleep(0.01)
        with watch.phase("inner"):
            time.sleep(0.03)
    assert 0.03 <= watch.seconds["inner"] < 0.045
    assert 0.01 <= watch.seconds["outer"] < 0.025  # without the inner phase's 0.03 s


def test_waits_times_the_wait_for_each_item_not_the_work_on_it() -> None:
    def slow() -> Iterator[int]:
        for n in range(3):
            time.sleep(0.01)
            yield n

    watch = Stopwatch()
    for _ in watch.waits("GET wait", slow()):
        time.sleep(0.02)  # work on the item: not a wait
    assert 0.03 <= watch.seconds["GET wait"] < 0.05


def test_a_phase_that_raises_is_still_counted() -> None:
    watch = Stopwatch()
    with pytest.raises(ValueError), watch.phase("claim"):
        time.sleep(0.01)
        raise ValueError("index down")
    assert watch.seconds["claim"] >= 0.01
