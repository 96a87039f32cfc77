"""Waiting in tests for something another process or thread does: one loop, one message."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(
    check: Callable[[], T | None],
    timeout: float = 60.0,
    interval: float = 0.2,
    what: str = "the condition",
) -> T:
    """The first truthy value `check()` returns, polled every `interval` seconds; an
    AssertionError naming `what` (and the last value seen) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s (last: {value!r})")
        time.sleep(interval)
