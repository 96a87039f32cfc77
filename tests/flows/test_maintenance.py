"""The maintenance run: what it deletes of result storage, what it never deletes, and a
simulated year of nightly syncs in bounded storage.

Time passes by ageing the stored files (their modification times), as a night would."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from flows.ledger.models import Rates
from flows.ledger.sync_state import Phase, SyncState, WalkSpec
from flows.maintenance import (
    ABANDONED_WALKS,
    FAN_OUT_RESULTS,
    FINISHED_WALKS,
    QUEUE_OUTCOMES,
    RATES_PINS,
    Walking,
    kind_to_prune,
    maintenance,
    syncs_walking,
)
from sandbox.server import Sandbox
from tests.helpers.ledger import (
    assert_ledger_exact,
    kill_when,
    page_fetches,
    paused_run,
    refetched,
    run_sync,
    start_sync_process,
)
from toolkit.state import STATE_SCHEMA_VERSION
from toolkit.storage import StoredObject

NOW = datetime(2026, 12, 1, tzinfo=UTC)
DAY = timedelta(days=1)
V = f"v{STATE_SCHEMA_VERSION}"


def aged(key: str, age: timedelta) -> StoredObject:
    return StoredObject(key, 100, NOW - age)


WALKING = {"sync1": Walking("walk1", NOW - timedelta(minutes=5))}


@pytest.mark.parametrize(
    ("key", "age", "kind"),
    [
        (f"walk-page/{V}/sync1/walk1/p", 40 * DAY, None),  # its sync is walking it
        (f"walk-page/{V}/sync1/walk0/p", 2 * timedelta(hours=1), FINISHED_WALKS),  # superseded
        (f"walk-page/{V}/sync1/walk0/p", timedelta(minutes=10), None),  # within the grace
        (f"walk-page/{V}/sync2/walk2/p", 2 * timedelta(hours=1), FINISHED_WALKS),  # sync done
        ("walk-page/v4/p", 40 * DAY, FINISHED_WALKS),  # an older schema's, past the retention
        ("walk-page/v4/p", 2 * DAY, None),  # a resumed older walk may still read it
        (f"rates/{V}/pins/r", 40 * DAY, RATES_PINS),
        (f"rates/{V}/pins/r", 2 * DAY, None),
        (f"rates/{V}/last-known-good", 400 * DAY, None),  # never
        ("rates/v3/r", 40 * DAY, RATES_PINS),
        ("fan-out/b.json", 40 * DAY, FAN_OUT_RESULTS),
        ("message-queue/i.json", 40 * DAY, QUEUE_OUTCOMES),
        ("message-queue/i.json", 2 * DAY, None),
        (f"sync/{V}/sync1", 400 * DAY, None),  # a sync's state: never
        ("0f3a9c", 400 * DAY, None),  # Prefect's own results: not ours to judge
    ],
)
def test_what_goes_and_what_stays(key: str, age: timedelta, kind: str | None) -> None:
    assert kind_to_prune(aged(key, age), WALKING, NOW, 30 * DAY) == kind


def test_a_walk_nobody_resumes_goes_after_the_retention() -> None:
    page = aged(f"walk-page/{V}/sync1/walk1/p", 40 * DAY)
    abandoned = {"sync1": Walking("walk1", NOW - 31 * DAY)}
    assert kind_to_prune(page, abandoned, NOW, 30 * DAY) == ABANDONED_WALKS


def test_only_walking_syncs_protect_pages() -> None:
    walk = WalkSpec(
        records_url="r", snapshot="s", page_size=1, max_records=None, rates=Rates.unavailable()
    )

    def stored(name: str, phase: Phase) -> tuple[StoredObject, bytes]:
        content = SyncState(phase=phase, walk=walk).model_dump_json().encode()
        return aged(f"sync/{V}/{name}", DAY), content

    states = [stored("a", "walking"), stored("b", "walked"), (aged(f"sync/{V}/c", DAY), b"{")]
    assert syncs_walking(states) == {"a": Walking(walk.walk_id, NOW - DAY)}


def files(storage: Path, top: str = "") -> dict[Path, int]:
    root = storage / top
    return {p: p.stat().st_size for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def age_everything(directory: Path, by: timedelta) -> None:
    for path in directory.rglob("*"):
        stat = path.stat()
        os.utime(path, (stat.st_atime - by.total_seconds(), stat.st_mtime - by.total_seconds()))


def leave_garbage(storage: Path) -> set[Path]:
    """What a kill after a sync was done leaves, and what older runs left: all prunable."""
    garbage = {
        storage / "walk-page" / V / "sync-gone" / "walk-done" / "page",
        storage / "rates" / V / "pins" / "old-pin",
        storage / "fan-out" / "old-batch.json",
    }
    for path in garbage:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    return garbage


@pytest.mark.usefixtures("sandbox_blocks")
def test_a_prune_while_a_walk_is_interrupted_keeps_its_pages_and_the_resume_is_exact(
    sandbox: Sandbox, result_storage: Path
) -> None:
    sandbox.set_faults("records", slow_rate=1.0, slow_seconds=0.15)
    process = start_sync_process()
    kill_when(process, lambda: sandbox.counters()["records"]["requests"] >= 5, 0.05)
    before = page_fetches(sandbox)
    sandbox.set_faults("records")
    pages = files(result_storage, "walk-page")
    assert pages
    garbage = leave_garbage(result_storage)
    age_everything(result_storage, 40 * DAY)  # the interrupted walk's state included

    freed = {row.kind: row for row in maintenance(older_than_days=60)}

    assert freed[FINISHED_WALKS].files == 1 and freed[FAN_OUT_RESULTS].files == 0
    assert not any(path.exists() for path in garbage if "walk-page" in path.parts)
    assert files(result_storage, "walk-page") == pages  # the walk in progress keeps them
    sandbox.reset_counters()
    summary = run_sync().result()
    assert summary.resumed
    assert len(refetched(before, page_fetches(sandbox))) <= 1  # what the kill cut short
    assert_ledger_exact(sandbox)


@pytest.mark.usefixtures("sandbox_blocks")
def test_a_prune_while_a_sync_is_paused_for_approval_then_it_loads_exact(
    sandbox: Sandbox, result_storage: Path
) -> None:
    from prefect.flow_runs import resume_flow_run

    thread, holder, run_id = paused_run(approval_above_eur=Decimal("1000"))
    garbage = leave_garbage(result_storage)
    age_everything(result_storage, 40 * DAY)

    freed = {row.kind: row for row in maintenance(older_than_days=30)}

    assert not any(path.exists() for path in garbage)  # pins and receipts past the retention
    assert freed[RATES_PINS].files == 1 and freed[FAN_OUT_RESULTS].files == 1
    assert freed[FINISHED_WALKS].files == 10 + 1  # a walked sync reads no page: all go
    assert files(result_storage, "sync")  # its state stays
    resume_flow_run(run_id, run_input={"approved": True, "reason": "ok", "approver": "ops"})
    thread.join(timeout=60)
    assert holder["state"].name == "Completed"
    assert_ledger_exact(sandbox)


def test_a_dry_run_deletes_nothing(prefect_server: str, result_storage: Path) -> None:
    garbage = leave_garbage(result_storage)
    age_everything(result_storage, 40 * DAY)

    freed = {row.kind: row for row in maintenance(older_than_days=30, dry_run=True)}

    assert freed[RATES_PINS].files == 1 and freed[RATES_PINS].bytes == 2
    assert all(path.exists() for path in garbage)


@pytest.mark.usefixtures("sandbox_blocks")
def test_a_simulated_year_of_nightly_syncs_stays_in_bounded_storage(
    sandbox: Sandbox, result_storage: Path, tmp_path: Path
) -> None:
    """Thirty nights of a growing data set, each a sync and the maintenance, two days apart
    (sixty days: the retention passes twice): storage after the last night at most 1.5
    times that after the first, every ledger exact."""
    index = tmp_path / "index.sqlite"
    sizes = []
    for _night in range(30):
        sandbox.grow(3, where="middle")
        assert run_sync(batch_size=250).name == "Completed"
        assert_ledger_exact(sandbox)
        maintenance(older_than_days=30)
        age_everything(result_storage, 2 * DAY)
        stored = sum(files(result_storage).values())
        indexed = sum(p.stat().st_size for p in tmp_path.glob("index.sqlite*"))
        sizes.append((stored, indexed))
    assert index.exists()
    (first_stored, first_indexed), (last_stored, last_indexed) = sizes[0], sizes[-1]
    assert last_stored <= 1.5 * first_stored, sizes
    assert last_indexed <= 1.5 * first_indexed, sizes
