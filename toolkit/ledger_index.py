"""What each ledger holds: a durable index of record ids by batch, and a lock per ledger.

Scenario
    A sync loads records into a ledger whose API answers only "batch applied" or "batch
    replayed": it cannot say whether it already holds record r-000042. The records service's
    data lives (records are added anywhere, pages move, an id may be served twice), so a
    batch built from today's pages differs from yesterday's, and its Idempotency-Key cannot
    stop a record that was in yesterday's batch from being applied again today.

Solution
    The sync keeps its own record of what each ledger holds: a row per record id naming the
    batch that holds it, a row per batch with its state and, until the ledger has it, its
    body. A batch is claimed (`claim`: `planned`) before anything is sent, becomes `approved`
    once the run may load (from then on it may be in the ledger), and `applied` once the
    ledger answered (`mark_applied`). So the index is also an outbox: an approved batch not
    yet applied is posted again, under the same Idempotency-Key, by whoever loads next, and
    the ledger replays or applies it. A claim never sent can be given back (`release_planned`:
    a refused sync, a walk superseded by a new snapshot).

    Why a table (toolkit/database.py), not Prefect's result storage or Redis: result storage
    is a key/value store of files or objects; an entry per record costs 500 file operations
    per page and millions of objects, an entry per batch must all be read to answer "is this
    id held?", which grows with the ledger. Redis would keep a million ids in the memory of a
    server a laptop does not run. A table keyed on the record id answers "which of these 500
    ids are held, and by whom?" in one indexed query and claims them in the same transaction
    (`claim`: a few statements a page, SQLite's settings in toolkit/database.py), keeps
    nothing in the sync's memory, and stays on disk: SQLite
    locally (nothing to start), PostgreSQL for workers on several machines, by URL
    (`RESILIENT_FLOWS_LEDGER_INDEX_URL`).

    `lock(ledger)` keeps one sync per ledger at a time, whatever the deployment, worker or
    machine, and is freed the moment its holder dies (toolkit/database_lock.py).

How to run
    index = LedgerIndex("sqlite:////tmp/ledger-index.sqlite")
    with index.lock(ledger_url):
        held = index.holders(ledger_url, ["r-000001", "r-000002"])
        index.claim(ledger_url, records_url, (walk_id, 0), ids, lambda held: PlannedBatch(...))
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import sqlalchemy as sa

from toolkit.config import settings
from toolkit.database import (
    compact,
    connected,
    each_value,
    engine_for,
    param_mark,
    transaction,
    unavailable_is_transient,
)
from toolkit.database_lock import database_lock
from toolkit.ledger_claims import BatchState, ClaimedBatch, Holder, PlannedBatch, ledger_key

IN_CHUNK = 500  # ids per holders query: a page's, in one parameter
# The statements of every page and every batch, written for the driver (`{m}`: its parameter
# mark, `{values}`: a table of one parameter, toolkit/database.py `each_value`): SQLAlchemy's
# building and compiling of them cost more than the database's work.
# The holders in two lookups by primary key, never one join: with the statistics of a table
# that has just grown (or was never analyzed), PostgreSQL joins the ids to every claim of the
# ledger, and a page's cost grows with the ledger.
HELD_SQL = (
    "SELECT record_id, batch_id FROM ledger_held "
    "WHERE ledger = {m} AND record_id IN (SELECT value FROM {values})"
)
HOLDING_SQL = (
    "SELECT batch_id, walk, position, state FROM ledger_batches "
    "WHERE ledger = {m} AND batch_id IN (SELECT value FROM {values})"
)
STALE = "ledger = {m} AND walk = {m} AND position = {m} AND state = 'planned' AND batch_id <> {m}"
GIVE_BACK_SQL = (  # the claims, then the rows, of batches planned at a place and never sent
    "DELETE FROM ledger_held WHERE ledger = {m} AND batch_id IN "
    f"(SELECT batch_id FROM ledger_batches WHERE {STALE})",
    f"DELETE FROM ledger_batches WHERE {STALE}",
)
PLAN_SQL = (
    "INSERT INTO ledger_batches (ledger, batch_id, sync, walk, position, body, state) "
    "VALUES ({m}, {m}, {m}, {m}, {m}, {m}, 'planned') ON CONFLICT DO NOTHING"
)
CLAIM_SQL = (
    "INSERT INTO ledger_held (ledger, record_id, batch_id) "
    "SELECT {m}, value, {m} FROM {values} WHERE true ON CONFLICT DO NOTHING"
)  # WHERE true: SQLite's parser needs it between a SELECT and ON CONFLICT
BODY_SQL = "SELECT body FROM ledger_batches WHERE ledger = {m} AND batch_id = {m}"
APPLIED_SQL = (  # its body is no longer needed: the index keeps ids, not the ledger's contents
    "UPDATE ledger_batches SET state = 'applied', body = NULL WHERE ledger = {m} AND batch_id = {m}"
)


_metadata = sa.MetaData()
_batches = sa.Table(
    "ledger_batches",
    _metadata,
    sa.Column("ledger", sa.String(32), primary_key=True),
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("sync", sa.String(32), nullable=False),  # who planned it: one records service
    sa.Column("walk", sa.String(64), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=True),  # what to post, until the ledger has it
    sa.Column("state", sa.String(16), nullable=False),
    sa.Index("ledger_batches_walk", "ledger", "walk", "state"),
)
_held = sa.Table(
    "ledger_held",
    _metadata,
    sa.Column("ledger", sa.String(32), primary_key=True),
    sa.Column("record_id", sa.String(255), primary_key=True),
    sa.Column("batch_id", sa.String(64), nullable=False),
    sa.Index("ledger_held_batch", "ledger", "batch_id"),
    sqlite_with_rowid=False,  # the primary key is the table: smaller, one lookup per id
)


_HOLDING_BATCH = (_batches.c.ledger == _held.c.ledger) & (_batches.c.batch_id == _held.c.batch_id)


class LedgerIndex:
    """The index in the database at `url` (`sqlite:///path` or `postgresql+psycopg://...`);
    cheap to make: the engine behind it is one per URL per process (toolkit/database.py)."""

    def __init__(self, url: str) -> None:
        self.url = url

    # -- reading ----------------------------------------------------------------------------

    def holders(self, ledger: str, record_ids: Sequence[str]) -> dict[str, Holder]:
        """The holder of each id of `record_ids` that the ledger holds or has claimed."""
        with connected(self.engine) as conn:
            return _holders(conn, ledger_key(ledger), record_ids)

    def body(self, ledger: str, batch_id: str) -> str:
        """What to post for a batch the ledger has not confirmed (the outbox's message)."""
        with connected(self.engine) as conn:
            sql = BODY_SQL.format(m=param_mark(conn))
            body = conn.exec_driver_sql(sql, (ledger_key(ledger), batch_id)).scalar()
        if body is None:
            raise KeyError(f"batch {batch_id} has no body to post (applied, or unknown)")
        return body

    def to_load(self, ledger: str, sync: str) -> list[ClaimedBatch]:
        """The approved batches of a sync that the ledger has not confirmed, in walk order."""
        query = (
            sa.select(_batches.c.batch_id, _batches.c.walk, _batches.c.position)
            .where(
                _batches.c.ledger == ledger_key(ledger),
                _batches.c.sync == ledger_key(sync),
                _batches.c.state == BatchState.APPROVED,
            )
            .order_by(_batches.c.walk, _batches.c.position)
        )
        with connected(self.engine) as conn:
            return [ClaimedBatch(*row) for row in conn.execute(query)]

    def count(self, ledger: str, state: BatchState | None = None) -> tuple[int, int]:
        """(batches, record ids) the index has for a ledger, in `state` if given."""
        batches = sa.select(sa.func.count()).select_from(_batches)
        batches = batches.where(_batches.c.ledger == ledger_key(ledger))
        held = sa.select(sa.func.count()).select_from(_held).join(_batches, _HOLDING_BATCH)
        held = held.where(_held.c.ledger == ledger_key(ledger))
        if state is not None:
            batches = batches.where(_batches.c.state == state)
            held = held.where(_batches.c.state == state)
        with connected(self.engine) as conn:
            return conn.scalar(batches) or 0, conn.scalar(held) or 0

    # -- writing ----------------------------------------------------------------------------

    def claim(
        self,
        ledger: str,
        sync: str,
        at: tuple[str, int],
        record_ids: Sequence[str],
        plan: Callable[[dict[str, Holder]], PlannedBatch | None],
    ) -> PlannedBatch | None:
        """In one transaction: the holders of `record_ids`, the batch that `plan` makes of them
        (None: nothing to claim), and its claim, planned at `at` (walk, position) with its
        body, what to post, kept until the ledger has it.

        Idempotent: claiming the same batch again changes nothing; a different batch planned
        earlier at the same place of the same walk (and never sent) is replaced. Six
        statements whatever the page's size: the holders in two lookups, the claims in one
        insert of one parameter.
        """
        key, (walk, position) = ledger_key(ledger), at
        with transaction(self.engine) as conn:
            m = param_mark(conn)
            planned = plan(_holders(conn, key, record_ids))
            stale = (key, walk, position, planned.batch_id if planned else "")
            conn.exec_driver_sql(GIVE_BACK_SQL[0].format(m=m), (key, *stale))
            conn.exec_driver_sql(GIVE_BACK_SQL[1].format(m=m), stale)
            if planned is None:
                return None
            batch = (key, planned.batch_id, ledger_key(sync), walk, position, planned.body)
            conn.exec_driver_sql(PLAN_SQL.format(m=m), batch)
            values, ids = each_value(conn, planned.record_ids)
            sql = CLAIM_SQL.format(m=m, values=values)
            conn.exec_driver_sql(sql, (key, planned.batch_id, ids))
        return planned

    def approve(self, ledger: str, walk: str) -> int:
        """Let a walk's planned batches be loaded: from now on they may be in the ledger."""
        approved = {"state": BatchState.APPROVED}
        return self._update(ledger, approved, walk=walk, state=BatchState.PLANNED)

    def mark_applied(self, ledger: str, batch_id: str) -> None:
        """The ledger applied (or replayed) the batch: it holds its ids for good."""
        with transaction(self.engine) as conn:
            sql = APPLIED_SQL.format(m=param_mark(conn))
            conn.exec_driver_sql(sql, (ledger_key(ledger), batch_id))

    def release_planned(self, ledger: str, sync: str, keep_walk: str | None = None) -> int:
        """Give back the claims of a sync's planned, never-sent batches (but `keep_walk`'s)."""
        key = ledger_key(ledger)
        query = sa.select(_batches.c.batch_id).where(
            _batches.c.ledger == key,
            _batches.c.sync == ledger_key(sync),
            _batches.c.state == BatchState.PLANNED,
        )
        if keep_walk is not None:
            query = query.where(_batches.c.walk != keep_walk)
        with transaction(self.engine) as conn:
            stale = conn.scalars(query).all()
            self._delete_batches(conn, key, stale)
        return len(stale)

    def clear(self, ledger: str) -> None:
        """Forget everything about a ledger (a test's fresh ledger; never used by a sync)."""
        key = ledger_key(ledger)
        with transaction(self.engine) as conn:
            conn.execute(sa.delete(_held).where(_held.c.ledger == key))
            conn.execute(sa.delete(_batches).where(_batches.c.ledger == key))

    def compact(self) -> int:
        """Give back the disk the index holds beyond its rows; the bytes freed."""
        return compact(self.engine)

    # -- the lock ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, ledger: str) -> Iterator[None]:
        """Hold the ledger for one sync; wait while another sync holds it."""
        name, waiting = f"ledger-{ledger_key(ledger)}", f"Another sync holds ledger {ledger}"
        with unavailable_is_transient(), database_lock(self.engine, name, waiting):
            yield

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        return engine_for(self.url, _metadata)

    def _update(self, ledger: str, values: dict[str, object], **where: str) -> int:
        update = sa.update(_batches).where(_batches.c.ledger == ledger_key(ledger))
        for column, value in where.items():
            update = update.where(_batches.c[column] == value)
        with transaction(self.engine) as conn:
            return conn.execute(update.values(**values)).rowcount

    @staticmethod
    def _delete_batches(conn: sa.Connection, key: str, batch_ids: Sequence[str]) -> None:
        for start in range(0, len(batch_ids), IN_CHUNK):
            chunk = list(batch_ids[start : start + IN_CHUNK])
            conn.execute(sa.delete(_held).where(_held.c.ledger == key, _held.c.batch_id.in_(chunk)))
            conn.execute(
                sa.delete(_batches).where(_batches.c.ledger == key, _batches.c.batch_id.in_(chunk))
            )


def _holders(conn: sa.Connection, key: str, record_ids: Sequence[str]) -> dict[str, Holder]:
    """The ids' claims, then their batches: two lookups by primary key per `IN_CHUNK` ids,
    written for the driver (SQLAlchemy's compilation of an `IN` of 500 parameters costs more
    than the database's work)."""
    m = param_mark(conn)
    held: dict[str, str] = {}
    for start in range(0, len(record_ids), IN_CHUNK):
        values, ids = each_value(conn, list(record_ids[start : start + IN_CHUNK]))
        held.update(conn.exec_driver_sql(HELD_SQL.format(m=m, values=values), (key, ids)).all())
    if not held:
        return {}
    values, batch_ids = each_value(conn, sorted(set(held.values())))
    rows = conn.exec_driver_sql(HOLDING_SQL.format(m=m, values=values), (key, batch_ids))
    batches = {batch_id: Holder(batch_id, w, p, BatchState(s)) for batch_id, w, p, s in rows}
    # As a join would: a claim is written with its batch and given back with it.
    return {r: batches[b] for r, b in held.items() if b in batches}


def ledger_index_url() -> str:
    """`RESILIENT_FLOWS_LEDGER_INDEX_URL`, else a SQLite file in `PREFECT_HOME` (absolute)."""
    from prefect.settings import PREFECT_HOME

    home = PREFECT_HOME.value().expanduser().resolve()
    return settings().ledger_index_url or f"sqlite:///{home}/ledger-index.sqlite"
