"""Reading what the code logged, in tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def logged(logger_name: str) -> Iterator[list[logging.LogRecord]]:
    """Records of one logger at WARNING and above (caplog's root handler does not survive
    Prefect configuring logging when a flow starts)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
