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
    process at a time, under an advisory lock); `connected` and
    `transaction` turn an outage or a busy database into `DatabaseUnavailable`, a transient
    error, so Prefect's retries apply; `insert_ignore` and `bulk_insert_ignore` are the one
    dialect difference the index needs.

How to run
    engine = engine_for("sqlite:////tmp/state.sqlite", metadata)
    with transaction(engine) as conn:
        bulk_insert_ignore(conn, table, ("a", "b"), [(1, 2), (3, 4)])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

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
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    with unavailable_is_transient(), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two first runs on a new database would CREATE the same table at once, which
            # PostgreSQL refuses (UniqueViolation on pg_type): one creator at a time, the lock
            # held until this transaction ends; the next one then finds the tables there.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        metadata.create_all(conn)
    return engine


@contextmanager
def connected(engine: sa.Engine) -> Iterator[sa.Connection]:
    with unavailable_is_transient(), engine.connect() as conn:
        yield conn


@contextmanager
def transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    with unavailable_is_transient(), engine.begin() as conn:
        yield conn


@contextmanager
def unavailable_is_transient() -> Iterator[None]:
    """Outages and busy timeouts are transient; any other database error is a bug."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(f"database unavailable: {exc.orig}") from exc


def insert_ignore(engine: sa.Engine, table: sa.Table) -> sa.Insert:
    """INSERT ... ON CONFLICT DO NOTHING, in the engine's dialect."""
    dialect = postgresql if engine.url.get_backend_name() == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def bulk_insert_ignore(
    conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert many rows, skipping those whose key exists, with the driver's own executemany:
    SQLAlchemy's per-row parameter handling costs more than the database's work (about 4 ms
    against 1 ms for 500 rows on SQLite)."""
    if not rows:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join(mark for _ in columns)}) ON CONFLICT DO NOTHING",
        [tuple(row) for row in rows],
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer. NORMAL: a commit survives the death of the process
    # (what a killed run needs) but not a power loss; FULL would fsync every commit, several
    # ms each. Prefect's local result storage does not fsync either: for durability against
    # a lost machine, use PostgreSQL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
