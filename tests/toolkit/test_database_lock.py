"""The database lock, on a SQLite file and on PostgreSQL: held by other threads and by other
processes, one of them SIGKILLed while it holds it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import sqlalchemy as sa

from tests.helpers import ROOT
from toolkit.database import engine_for
from toolkit.database_lock import database_lock

NO_TABLES = sa.MetaData()


def test_a_second_holder_waits_for_the_first(database_url: str) -> None:
    engine = engine_for(database_url, NO_TABLES)
    events: list[str] = []
    holding = threading.Event()

    def first() -> None:
        with database_lock(engine, "ledger-a", "busy"):
            events.append("first in")
            holding.set()
            time.sleep(0.6)
            events.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    holding.wait(5)
    with database_lock(engine, "ledger-b", "busy"):
        events.append("another name meanwhile")
    with database_lock(engine, "ledger-a", "busy"):
        events.append("second in")
    thread.join()
    assert events == ["first in", "another name meanwhile", "first out", "second in"]


HOLD = """
import sys, time
import sqlalchemy as sa
from toolkit.database import engine_for
from toolkit.database_lock import database_lock
with database_lock(engine_for(sys.argv[1], sa.MetaData()), "ledger-a", "busy"):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_a_sigkilled_holder_frees_the_lock_at_once(database_url: str) -> None:
    engine = engine_for(database_url, NO_TABLES)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, database_url], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        started = time.monotonic()
        with database_lock(engine, "ledger-a", "busy"):
            waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert waited < 5  # a lease-based lock would keep it for its lease (60 s or more)
