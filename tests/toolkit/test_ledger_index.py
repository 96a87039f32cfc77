"""The ledger index on a real SQLite file and a real PostgreSQL database (the session's own,
chosen by tests/helpers/services.py).

Claims, approval, confirmation and release are counted in the database itself; the lock
itself is tests/toolkit/test_database_lock.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from toolkit.ledger_claims import BatchState, ClaimedBatch, Holder, PlannedBatch
from toolkit.ledger_index import LedgerIndex

LEDGER, RECORDS = "http://ledger.example", "http://records.example"


@pytest.fixture
def index(database_url: str) -> Iterator[LedgerIndex]:
    index = LedgerIndex(database_url)
    index.clear(LEDGER)
    yield index
    index.engine.dispose()  # close its connections: the module's database is dropped at the end


def claim(batch_id: str, walk: str = "w1", position: int = 0) -> ClaimedBatch:
    return ClaimedBatch(batch_id, walk, position)


def plan(index: LedgerIndex, claimed: ClaimedBatch, record_ids: list[str], sync=RECORDS) -> None:
    """Claim `record_ids` whoever holds them (the flow decides with `split_entries`)."""
    batch = PlannedBatch(claimed.batch_id, record_ids, body=f"body of {claimed.batch_id}")
    index.claim(LEDGER, sync, (claimed.walk, claimed.position), record_ids, lambda _: batch)


def ids(*numbers: int) -> list[str]:
    return [f"r-{n:06d}" for n in numbers]


def test_a_planned_batch_holds_its_ids_and_planning_again_changes_nothing(
    index: LedgerIndex,
) -> None:
    plan(index, claim("b-1"), ids(1, 2, 3))
    plan(index, claim("b-1"), ids(1, 2, 3))

    held = index.holders(LEDGER, ids(1, 2, 3, 4))
    assert set(held) == set(ids(1, 2, 3))
    assert {(h.batch_id, h.walk, h.position, h.state) for h in held.values()} == {
        ("b-1", "w1", 0, BatchState.PLANNED)
    }
    assert index.count(LEDGER) == (1, 3)
    assert index.holders("http://another-ledger", ids(1, 2, 3)) == {}


def test_an_id_is_held_by_the_first_batch_that_claims_it(index: LedgerIndex) -> None:
    plan(index, claim("b-1"), ids(1, 2))
    plan(index, claim("b-2", position=1), ids(2, 3))

    held = index.holders(LEDGER, ids(1, 2, 3))
    assert {rid: h.batch_id for rid, h in held.items()} == {
        ids(1)[0]: "b-1",
        ids(2)[0]: "b-1",
        ids(3)[0]: "b-2",
    }


def test_approve_then_applied_leaves_nothing_to_load(index: LedgerIndex) -> None:
    plan(index, claim("b-1"), ids(1, 2))
    plan(index, claim("b-2", position=1), ids(3))
    plan(index, claim("b-9", walk="w2"), ids(9))
    assert index.to_load(LEDGER, RECORDS) == []  # planned is not loadable

    assert index.approve(LEDGER, "w1") == 2
    assert [c.batch_id for c in index.to_load(LEDGER, RECORDS)] == ["b-1", "b-2"]
    assert index.to_load(LEDGER, "http://other-records") == []
    assert index.body(LEDGER, "b-1") == "body of b-1"

    index.mark_applied(LEDGER, "b-1")
    with pytest.raises(KeyError):  # applied: nothing left to post
        index.body(LEDGER, "b-1")
    assert [c.batch_id for c in index.to_load(LEDGER, RECORDS)] == ["b-2"]
    assert index.count(LEDGER, BatchState.APPLIED) == (1, 2)


def test_release_gives_back_only_planned_claims_of_the_sync(index: LedgerIndex) -> None:
    plan(index, claim("b-1"), ids(1))
    index.approve(LEDGER, "w1")
    plan(index, claim("b-2", walk="w2"), ids(2))
    plan(index, claim("b-3", walk="w3"), ids(3))
    plan(index, claim("b-4", walk="w4"), ids(4), sync="http://other-records")

    assert index.release_planned(LEDGER, RECORDS, keep_walk="w3") == 1  # b-2
    assert set(index.holders(LEDGER, ids(1, 2, 3, 4))) == set(ids(1, 3, 4))
    assert index.release_planned(LEDGER, RECORDS) == 1  # b-3; b-1 may be in the ledger
    assert set(index.holders(LEDGER, ids(1, 2, 3, 4))) == set(ids(1, 4))


def test_a_replanned_position_replaces_its_unsent_batch(index: LedgerIndex) -> None:
    plan(index, claim("b-1"), ids(1, 2))
    plan(index, claim("b-1b"), ids(1))

    assert {rid: h.batch_id for rid, h in index.holders(LEDGER, ids(1, 2)).items()} == {
        ids(1)[0]: "b-1b"
    }


def test_a_thousand_ids_are_looked_up_in_chunks(index: LedgerIndex) -> None:
    many = ids(*range(1, 1201))
    plan(index, claim("b-1"), many)
    assert len(index.holders(LEDGER, [*many, "r-none"])) == 1200


def test_a_claim_decides_on_the_holders_it_read_in_its_own_transaction(
    index: LedgerIndex,
) -> None:
    plan(index, claim("b-1"), ids(1, 2))
    seen: list[dict[str, Holder]] = []

    def fresh_only(held: dict[str, Holder]) -> PlannedBatch:
        seen.append(held)
        fresh = [rid for rid in ids(2, 3, 4) if rid not in held]
        return PlannedBatch("b-2", fresh, "body of b-2")

    index.claim(LEDGER, RECORDS, ("w1", 1), ids(2, 3, 4), fresh_only)

    assert [set(held) for held in seen] == [set(ids(2))]
    assert {rid: h.batch_id for rid, h in index.holders(LEDGER, ids(1, 2, 3, 4)).items()} == {
        **dict.fromkeys(ids(1, 2), "b-1"),
        **dict.fromkeys(ids(3, 4), "b-2"),
    }


def test_a_claim_that_fails_midway_writes_nothing(index: LedgerIndex) -> None:
    plan(index, claim("b-1"), ids(1, 2))

    def fails_after_deciding(held: dict[str, Holder]) -> PlannedBatch:
        raise RuntimeError("killed while deciding")

    with pytest.raises(RuntimeError):  # the stale batch at ("w1", 0) is not given back
        index.claim(LEDGER, RECORDS, ("w1", 0), ids(1, 2), fails_after_deciding)
    assert index.count(LEDGER) == (1, 2)


def test_nothing_to_claim_gives_back_an_unsent_batch_planned_at_the_same_place(
    index: LedgerIndex,
) -> None:
    plan(index, claim("b-1"), ids(1, 2))
    assert index.claim(LEDGER, RECORDS, ("w1", 0), ids(1, 2), lambda _: None) is None
    assert index.count(LEDGER) == (0, 0)


def test_a_page_is_claimed_in_a_few_statements_whatever_its_size(index: LedgerIndex) -> None:
    """Holders, give-back, batch and its 500 claims: statements counted at the driver."""
    import sqlalchemy as sa

    statements: list[str] = []
    count = lambda *args, **kwargs: statements.append(args[2])  # noqa: E731
    sa.event.listen(index.engine, "before_cursor_execute", count)
    try:
        plan(index, claim("b-1"), ids(*range(500)))
    finally:
        sa.event.remove(index.engine, "before_cursor_execute", count)

    work = [s for s in statements if not s.startswith(("BEGIN", "COMMIT"))]
    assert len(work) <= 5, work
    assert index.count(LEDGER) == (1, 500)


def rows_filtered_out(plan: dict) -> int:
    """The rows a plan node (and those under it) read and then threw away."""
    loops = plan.get("Actual Loops", 1)
    own = sum(plan.get(k, 0) for k in ("Rows Removed by Filter", "Rows Removed by Join Filter"))
    return own * loops + sum(rows_filtered_out(child) for child in plan.get("Plans", []))


def test_a_pages_holders_are_read_by_key_on_tables_that_have_just_grown(postgres_url: str) -> None:
    """PostgreSQL plans by statistics, and tables that have just grown (a first sync) have none:
    reading a page's holders must still look its ids up, not read the ledger's claims. The
    statements `holders` runs are replayed under EXPLAIN ANALYZE, in a database of their own
    (never analyzed), and the rows they read and threw away are counted."""
    import sqlalchemy as sa

    from tests.helpers.services import admin_engine

    name = f"{sa.make_url(postgres_url).database}_plans"
    admin = admin_engine(postgres_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    index = LedgerIndex(str(sa.make_url(postgres_url).set(database=name)))
    try:
        for page in range(40):
            plan(index, claim(f"b{page}", position=page), ids(*range(page * 100, page * 100 + 100)))
        statements: list[tuple[str, object]] = []

        def seen(*args: object) -> None:  # conn, cursor, statement, parameters, context, many
            statement, parameters = args[2], args[3]
            statements.append((str(statement), parameters))

        sa.event.listen(index.engine, "before_cursor_execute", seen)
        held = index.holders(LEDGER, ids(*range(3950, 4050)))  # half held, by the last batch
        sa.event.remove(index.engine, "before_cursor_execute", seen)
        assert len(held) == 50 and {h.batch_id for h in held.values()} == {"b39"}

        with index.engine.connect() as conn:
            explained = [
                conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params).scalar()
                for sql, params in statements
            ]
        thrown_away = sum(rows_filtered_out(plan[0]["Plan"]) for plan in explained)
        assert thrown_away <= 200, (thrown_away, explained)  # the ledger holds 4,000 claims
    finally:
        index.engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
