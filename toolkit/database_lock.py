"""A lock named after a resource, kept by the database that holds the resource's state.

Scenario
    Two runs must never work on the same resource (one ledger) at once, whichever deployment,
    worker or machine starts them, and a holder that dies (SIGKILL, a lost machine) must not
    keep the resource from the next run.

Solution
    The lock lives where the resource's state lives, and dies with its holder: for a SQLite
    database, an exclusive `flock` on a file beside it (the kernel drops it with the process);
    for PostgreSQL, an advisory lock on a connection held while the lock is (the server drops
    it with the connection). A Prefect global concurrency limit would do the same job through
    the API, but a dead holder keeps its slot for the whole lease (at least 60 s in Prefect
    3.9), and with `strict=False` a limit that was never created lets every run in.

How to run
    with database_lock(engine, "ledger-3f1c", "another sync holds the ledger"):
        ...  # one holder at a time per name, across processes and machines
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

logger = logging.getLogger("resilient_flows.database_lock")

POLL_SECONDS = 0.2


@contextmanager
def database_lock(engine: sa.Engine, name: str, waiting: str) -> Iterator[None]:
    """Hold the lock `name`; while another holder has it, log `waiting` once and wait."""
    if engine.url.get_backend_name() == "sqlite":
        with _file_lock(Path(f"{engine.url.database}.{name}.lock"), waiting):
            yield
    else:
        with _advisory_lock(engine, name, waiting):
            yield


@contextmanager
def _file_lock(path: Path, waiting: str) -> Iterator[None]:
    with path.open("a") as handle:
        _wait(lambda: _try_flock(handle.fileno()), waiting)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def _advisory_lock(engine: sa.Engine, name: str, waiting: str) -> Iterator[None]:
    number = int(hashlib.sha256(name.encode()).hexdigest()[:15], 16)  # a signed 64-bit bigint
    with engine.connect() as conn:
        try_lock = sa.text("SELECT pg_try_advisory_lock(:n)").bindparams(n=number)
        _wait(lambda: bool(conn.scalar(try_lock)), waiting)
        conn.commit()  # hold the lock, not a transaction
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:n)").bindparams(n=number))
            conn.commit()


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait(acquire: Callable[[], bool], waiting: str) -> None:
    if acquire():
        return
    logger.warning("%s: waiting", waiting)
    while not acquire():
        time.sleep(POLL_SECONDS)
