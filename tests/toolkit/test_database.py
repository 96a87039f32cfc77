"""The project's database plumbing, on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from toolkit.database import (
    DatabaseUnavailable,
    connected,
    each_value,
    engine_for,
)
from toolkit.retry import is_transient

METADATA = sa.MetaData()
PAIRS = sa.Table(
    "test_pairs",
    METADATA,
    sa.Column("key", sa.String(16), primary_key=True),
    sa.Column("value", sa.String(16), nullable=False),
)


def test_each_value_is_a_table_of_the_values_as_given(database_url: str) -> None:
    """Whatever the text: quotes, backslashes, JSON's own characters, non-ASCII, empty."""
    given = ["r-1", "it's", 'a "q"', "back\\slash", "[1, 2]", "é ∑ 𝄞", "", "r-1"]
    engine = engine_for(database_url, METADATA)
    with connected(engine) as conn:
        values, parameter = each_value(conn, given)
        rows = conn.exec_driver_sql(f"SELECT value FROM {values}", (parameter,)).all()
    assert [value for (value,) in rows] == given


def test_one_engine_per_url(database_url: str) -> None:
    assert engine_for(database_url, METADATA) is engine_for(database_url, METADATA)


def test_an_unreachable_database_is_a_transient_error() -> None:
    with pytest.raises(DatabaseUnavailable) as raised:
        engine_for("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2", METADATA)
    assert is_transient(raised.value)


def test_sqlite_needs_a_file() -> None:
    with pytest.raises(ValueError, match="a database file"):
        engine_for("sqlite:///:memory:", METADATA)


CREATE_TABLES = """
import sys, time
from toolkit.database import engine_for
from toolkit.ledger_index import _metadata
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all processes at the same moment
engine_for(sys.argv[1], _metadata)
"""


def test_processes_creating_the_tables_of_a_new_postgresql_database_at_once_all_succeed(
    postgres_url: str,
) -> None:
    """First syncs of many workers against a new ledger index: PostgreSQL's catalog refuses
    two concurrent CREATE TABLEs of one name (UniqueViolation on pg_type) unless serialized."""
    import subprocess
    import sys
    import time
    import uuid

    from tests.helpers import ROOT
    from tests.helpers.services import admin_engine

    server = postgres_url.rsplit("/", 1)[0]
    name = f"resilient_flows_test_new_{uuid.uuid4().hex[:8]}"
    admin = admin_engine(server)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        at = str(time.time() + 4)
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", CREATE_TABLES, f"{server}/{name}", at],
                cwd=ROOT,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(16)
        ]
        failures = [p.stderr.read() for p in processes if p.wait(timeout=60) != 0]
        assert failures == [], failures[0][-1500:]
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
