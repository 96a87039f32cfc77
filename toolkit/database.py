"""A database for the project's own durable state, chosen by a SQLAlchemy URL.

Scenario
    Some state outgrows Prefect's result storage (a key/value store of files): the ledger
    index holds a row per record of a ledger and must answer "which of these 500 ids do you
    hold?" in one query. Locally it should need nothing running; with workers on several
    machines it must be shared.

Solution
    SQLAlchemy Core (installed with Prefect, which keeps its own server state the same way):
    a SQLite file by default, PostgreSQL by URL. `engine_for` sets each up once per process
    (SQLite in WAL mode; PostgreSQL with pre-ping) and creates the tables (on PostgreSQL one
    process at a time, under an advisory lock); `connected` (reads) and `transaction`
    (writes) turn an outage or a busy database into `DatabaseUnavailable`, a transient
    error, so Prefect's retries apply; `each_value` passes a page's worth of values to one
    statement in either dialect.

    SQLite's settings, and what each risks: WAL journal (readers and the writer do not block
    each other); `synchronous=NORMAL` (a commit survives a killed process, which is what a
    killed run needs, but the last commits may be lost to a power cut or a kernel crash: a
    documented choice, since a lost commit is a claim or a confirmation the next run redoes
    against a ledger that answers replays; FULL would fsync every commit); write
    transactions `BEGIN IMMEDIATE` (they wait for the write lock instead of failing).

How to run
    engine = engine_for("sqlite:////tmp/state.sqlite", metadata)
    with transaction(engine) as conn:
        values, ids = each_value(conn, ["r-1", "r-2"])
        conn.exec_driver_sql(f"SELECT value FROM {values}", (ids,))
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from toolkit.retry import TransientError

SCHEMA_LOCK = 0x7265_7366_6C6F_7773  # "resflows": the advisory lock key of table creation


class DatabaseUnavailable(TransientError):
    """The database could not be reached, or stayed busy: retrying may succeed."""


@cache
def engine_for(url: str, metadata: sa.MetaData) -> sa.Engine:
    """One engine (one connection pool) per URL per process, its tables created."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = sa.create_engine(parsed, pool_pre_ping=True)
    else:
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError(f"a database file is needed, not {url}")
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_connection)
        sa.event.listen(engine, "begin", _sqlite_begin)
    with transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            # Two first runs on a new database would CREATE the same table at once, which
            # PostgreSQL refuses (UniqueViolation on pg_type): one creator at a time, the lock
            # held until this transaction ends; the next one then finds the tables there.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        metadata.create_all(conn)
    return engine


def compact(engine: sa.Engine) -> int:
    """Give back the disk a database holds beyond its data; the bytes freed. SQLite: its
    write-ahead log, which grows to the largest run's writes and is truncated only here
    (a checkpoint that waits for no one: a sync at work keeps what it still reads).
    PostgreSQL: nothing to do, its autovacuum reuses the space of deleted rows."""
    if engine.dialect.name != "sqlite":
        return 0
    log = Path(f"{engine.url.database}-wal")
    before = log.stat().st_size if log.exists() else 0
    with connected(engine) as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return before - (log.stat().st_size if log.exists() else 0)


@contextmanager
def connected(engine: sa.Engine) -> Iterator[sa.Connection]:
    with unavailable_is_transient(), engine.connect() as conn:
        yield conn


@contextmanager
def transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A write transaction: on SQLite it holds the write lock from its first statement."""
    with unavailable_is_transient(), engine.connect() as conn:
        conn.execution_options(writes=True)
        with conn.begin():
            yield conn


@contextmanager
def unavailable_is_transient() -> Iterator[None]:
    """Outages and busy timeouts are transient; any other database error is a bug."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(f"database unavailable: {exc.orig}") from exc


def param_mark(conn: sa.Connection) -> str:
    """The driver's positional parameter mark, for SQL written for the driver."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def each_value(conn: sa.Connection, values: Sequence[str]) -> tuple[str, Any]:
    """A table of one column, `value`, of `values` passed as one parameter, for SQL written
    for the driver: the table's SQL and the parameter. SQLite reads a JSON array
    (`json_each`), PostgreSQL an array (`unnest`): one statement of one parameter, however
    many values, where `IN (?, ?, ...)` or `executemany` would carry one per value."""
    if conn.dialect.name == "postgresql":
        return "unnest(%s::text[]) AS value", list(values)
    return "json_each(?)", json.dumps(list(values))


def _sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # The driver begins no transaction of its own (it would, only before the first write,
    # after the reads that decided it): SQLAlchemy's begin does, `_sqlite_begin`.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer. NORMAL: a commit survives the death of the process
    # (what a killed run needs) but not a power loss; FULL would fsync every commit, several
    # ms each. Prefect's local result storage does not fsync either: for durability against
    # a lost machine, use PostgreSQL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # A write transaction takes the write lock at BEGIN (IMMEDIATE), waiting up to the busy
    # timeout for it: one that read first and wrote later would fail at once, without
    # waiting, had another connection written in between. Reads begin DEFERRED: in WAL they
    # see one snapshot and block no one.
    writes = conn.get_execution_options().get("writes", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")
