"""ledger_sync on living data: the records change between runs and under a killed run.

Records are added at the end, the front or the middle (every page boundary moves), ids are
served twice, snapshots expire, a cursor loops, records come in shapes no one expected, two
syncs start at once. Every assertion is counted at the sandbox: the ledger holds each valid
record once, no record was ever applied twice, and a resume fetches no page again.
"""

from __future__ import annotations

import json

import pytest

from sandbox.server import Sandbox
from tests.helpers.ledger import (
    assert_ledger_exact,
    kill_when,
    page_fetches,
    refetched,
    run_sync,
    start_sync_process,
)

pytestmark = pytest.mark.usefixtures("sandbox_blocks")

PAGES = 10  # 1000 sandbox records at batch_size=100


def kill_during_walk(sandbox: Sandbox, after_pages: int, *arguments: str) -> dict[str, int]:
    """Start a sync whose pages answer slowly, SIGKILL it mid-walk; what it had fetched."""
    sandbox.set_faults("records", slow_rate=1.0, slow_seconds=0.15)
    process = start_sync_process(*arguments)
    kill_when(process, lambda: sum(page_fetches(sandbox).values()) >= after_pages, after=0.05)
    sandbox.set_faults("records")
    fetched = page_fetches(sandbox)
    sandbox.reset_counters()
    return fetched


def kill_during_load(sandbox: Sandbox, after_batches: int) -> None:
    sandbox.set_faults("ledger", delay_after_apply=0.3)
    process = start_sync_process()
    kill_when(process, lambda: sandbox.counters()["ledger"]["applied"] >= after_batches, 0.1)
    sandbox.set_faults("ledger")
    sandbox.reset_counters()


def table_rows(state) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run_filter = ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=run_filter))
    (table,) = [artifact for artifact in artifacts if artifact.type == "table"]
    return table.data if isinstance(table.data, list) else json.loads(table.data)


@pytest.mark.parametrize("where", ["end", "front", "middle"])
def test_growth_between_runs_loads_only_the_new_records(sandbox: Sandbox, where: str) -> None:
    first = run_sync().result()
    held = len(sandbox.dataset.expected_entries())
    sandbox.grow(130, where)  # every page boundary after the insertion point moves
    sandbox.reset_counters()

    second = run_sync().result()

    assert_ledger_exact(sandbox)  # and no record was ever applied twice
    new = len(sandbox.dataset.expected_entries()) - held
    assert second.snapshot == sandbox.dataset.snapshot != first.snapshot
    assert second.loaded == new and second.already_in_ledger == held
    assert second.total_eur == sandbox.dataset.expected_total_eur()


@pytest.mark.parametrize("distance", [1, 350], ids=["same-page", "another-page"])
def test_an_id_served_twice_is_loaded_once_and_reported(sandbox: Sandbox, distance: int) -> None:
    records, invalid = sandbox.dataset.records, sandbox.dataset.invalid
    index = next(i for i in range(40, 90) if records[i]["id"] not in invalid)
    repeated = records[index]["id"]
    sandbox.repeat(repeated, index + distance)

    state = run_sync()

    assert_ledger_exact(sandbox)
    summary = state.result()
    assert summary.repeated == 1 and summary.valid == len(sandbox.dataset.expected_entries())
    rows = [row for row in table_rows(state) if row["kind"] == "repeated"]
    assert [row["record_id"] for row in rows] == [repeated]
    assert rows[0]["reason"].startswith("id: repeated")


def test_records_no_one_expected_are_quarantined_and_the_run_completes(sandbox: Sandbox) -> None:
    odd = {
        "1e400": {"amount": "1e400"},
        "huge": {"amount": "9" * 400},
        "minus-zero": {"amount": "-0"},
        "float": {"amount": 12.5},
        "number-account": {"account": 17},
        "number-time": {"updated_at": 1764000000},
        "list-currency": {"currency": ["EUR"]},
    }
    for at, fields in enumerate(odd.values(), start=1):
        sandbox.insert_bad_record(at * 130, **fields)
    bad_ids = [
        r["id"]
        for r in sandbox.dataset.records
        if sandbox.dataset.invalid.get(r["id"]) == "bad_record"
    ]

    state = run_sync()

    assert state.name == "Completed"
    assert_ledger_exact(sandbox)
    reasons = {row["record_id"]: row["reason"] for row in table_rows(state)}
    fields = [next(iter(change)) for change in odd.values()]
    assert [reasons[record_id].split(":")[0] for record_id in bad_ids] == fields


@pytest.mark.timeout(90)  # a sync that followed the loop would never end
def test_a_cursor_that_loops_ends_the_run_marked_with_nothing_posted_twice(
    sandbox: Sandbox,
) -> None:
    sandbox.loop_cursor(at_offset=500, back_to_offset=200)  # page 5 says: next is page 3

    state = run_sync()

    assert state.is_failed() and state.name == "Incomplete"
    assert "cursors loop" in state.message
    served = {record["id"] for record in sandbox.dataset.records[:500]}
    expected = {
        rid: eur for rid, eur in sandbox.dataset.expected_entries().items() if rid in served
    }
    assert_ledger_exact(sandbox, expected)
    assert set(page_fetches(sandbox).values()) == {1}  # the loop was noticed, not followed
    sandbox.reset_counters()

    again = run_sync()  # not retried by Prefect, and a new run posts nothing twice

    assert again.name == "Incomplete"
    assert sandbox.counters()["ledger"]["post_attempts"] == 0


def test_an_expired_snapshot_starts_a_new_one_and_the_ledger_stays_exact(sandbox: Sandbox) -> None:
    old = sandbox.dataset
    kill_during_walk(sandbox, after_pages=4)
    sandbox.grow(40, "front")
    sandbox.expire_snapshots()  # the killed walk's cursors now answer 410 Gone

    summary = run_sync().result()

    assert_ledger_exact(sandbox)
    assert summary.snapshots_expired == 1 and summary.snapshot == sandbox.dataset.snapshot
    assert summary.snapshot != old.snapshot


@pytest.mark.parametrize("killed_in", ["walk", "load"])
def test_growth_between_a_kill_and_its_resume(sandbox: Sandbox, killed_in: str) -> None:
    """The resume finishes the snapshot the killed run was in; the next run takes the new."""
    old = sandbox.dataset
    if killed_in == "walk":
        kill_during_walk(sandbox, after_pages=4)
    else:
        kill_during_load(sandbox, after_batches=3)
    sandbox.grow(70, "front")

    resumed = run_sync().result()

    assert resumed.resumed and resumed.snapshot == old.snapshot
    assert "" not in page_fetches(sandbox)  # no new snapshot was opened
    assert_ledger_exact(sandbox, old.expected_entries())

    later = run_sync().result()

    assert_ledger_exact(sandbox)
    assert later.snapshot == sandbox.dataset.snapshot
    assert later.loaded == len(sandbox.dataset.expected_entries()) - len(old.expected_entries())


def test_a_resume_with_another_batch_size_is_exact_and_fetches_no_page_again(
    sandbox: Sandbox,
) -> None:
    before = kill_during_walk(sandbox, 4, "batch_size=100")

    summary = run_sync(batch_size=250).result()

    assert_ledger_exact(sandbox)
    after = page_fetches(sandbox)
    assert "" not in after and len(refetched(before, after)) <= 1
    assert summary.resumed and summary.pages == PAGES  # the interrupted walk's pages of 100


def test_two_syncs_of_one_ledger_at_the_same_moment(sandbox: Sandbox) -> None:
    sandbox.set_faults("ledger", delay_after_apply=0.05)
    first, second = start_sync_process(), start_sync_process()

    assert first.wait(timeout=120) == 0 and second.wait(timeout=120) == 0

    assert_ledger_exact(sandbox)
    ledger = sandbox.counters()["ledger"]
    assert (ledger["applied"], ledger["replayed"]) == (PAGES, 0)  # the second had nothing to do
