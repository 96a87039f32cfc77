"""ledger_sync against a real Prefect server and the real sandbox over loopback.

Every assertion about the ledger is counted at the sandbox: what it applied, replayed,
reversed, and how often each page was fetched. The data set here never changes; living data
is tests/flows/test_ledger_sync_live.py.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.server import Sandbox
from tests.helpers import ROOT
from tests.helpers.ledger import (
    assert_ledger_exact,
    kill_when,
    page_fetches,
    refetched,
    run_sync,
    start_sync_process,
)
from tests.helpers.polling import poll_until
from toolkit.config import settings

pytestmark = pytest.mark.usefixtures("sandbox_blocks")

PAGES = 10  # 1000 sandbox records at batch_size=100


def applied(sandbox: Sandbox) -> int:
    return sandbox.counters()["ledger"]["applied"]


def test_clean_run_loads_every_valid_record_once(sandbox: Sandbox) -> None:
    summary = run_sync().result()

    assert_ledger_exact(sandbox)
    assert (summary.records, summary.valid, summary.quarantined) == (1000, 950, 50)
    assert summary.pages == summary.pages_fetched == PAGES and summary.batches_applied == PAGES
    assert summary.total_eur == sandbox.dataset.expected_total_eur()
    ledger = sandbox.counters()["ledger"]
    assert (ledger["applied"], ledger["replayed"], ledger["deleted"]) == (PAGES, 0, 0)
    assert page_fetches(sandbox) == {cursor: 1 for cursor in page_fetches(sandbox)}


def test_a_sync_records_no_task_run_per_page(sandbox: Sandbox) -> None:
    """Pages and batches are not task runs (flows/ledger/plan.py says why): the task runs a
    sync records do not grow with its pages."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    run_id = run_sync().state_details.flow_run_id
    seen: list[int] = []

    def recorded() -> list | None:
        """The run's task runs once the server has recorded them all (their states arrive as
        events, after the run ends): some, and no more for 2 s."""
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
        seen.append(len(runs))
        return runs if runs and seen[-8:] == [len(runs)] * 8 else None

    runs = poll_until(recorded, timeout=60, interval=0.25, what="the task runs being recorded")
    assert_ledger_exact(sandbox)
    assert len(runs) < PAGES, sorted(run.name for run in runs)


def test_faulty_upstreams_still_give_an_exact_ledger(sandbox: Sandbox) -> None:
    sandbox.set_faults("ledger", error_rate=0.15, drop_rate=0.05, drop_after_apply_rate=0.05)
    sandbox.set_faults("records", error_rate=0.15, drop_rate=0.10, rate_limit_rate=0.05)
    sandbox.set_faults("rates", error_rate=0.3)

    summary = run_sync().result()

    assert_ledger_exact(sandbox)
    counters = sandbox.counters()
    faults = sum(
        n
        for service in ("ledger", "records")
        for s, n in counters[service]["by_status"].items()
        if int(s) >= 429
    )
    assert faults + counters["ledger"]["dropped"] + counters["records"]["dropped"] > 0
    assert counters["ledger"]["applied"] == PAGES
    assert summary.valid == 950


def test_a_rerun_with_nothing_new_does_no_per_page_work(sandbox: Sandbox) -> None:
    run_sync()
    sandbox.reset_counters()

    state = run_sync()

    assert state.name == "Completed"
    summary = state.result()
    assert summary.nothing_new and summary.pages_from_checkpoints == 0
    counters = sandbox.counters()
    assert counters["ledger"]["requests"] == 0
    assert page_fetches(sandbox) == {"": 1}  # only the page that says which snapshot is current
    assert summary.total_eur == sandbox.dataset.expected_total_eur()
    assert_ledger_exact(sandbox)


def test_a_finished_sync_deletes_its_walks_pages_and_keeps_what_the_next_one_needs(
    sandbox: Sandbox, result_storage: Path
) -> None:
    assert run_sync().name == "Completed"

    kept = {
        p.relative_to(result_storage).parts[0] for p in result_storage.rglob("*") if p.is_file()
    }
    assert kept == {"sync", "rates"}  # the done sync, the rates pinned and last known good
    sandbox.grow(150, where="middle")  # the next night: its walk starts afresh
    assert run_sync().result().loaded > 0
    assert_ledger_exact(sandbox)
    assert not [p for p in (result_storage / "walk-page").rglob("*") if p.is_file()]


def test_failure_between_post_and_record_is_compensated(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index cannot record page 4's batch once: it is DELETEd, then applied again; the
    batches posted beside it are replayed by the retry, none applied twice."""
    from toolkit.database import DatabaseUnavailable
    from toolkit.ledger_index import LedgerIndex

    real_mark_applied, calls = LedgerIndex.mark_applied, []

    def flaky_mark_applied(self, ledger: str, batch_id: str) -> None:
        calls.append(batch_id)
        if len(calls) == 4:
            raise DatabaseUnavailable("database is locked (injected)")
        real_mark_applied(self, ledger, batch_id)

    monkeypatch.setattr(LedgerIndex, "mark_applied", flaky_mark_applied)

    state = run_sync()

    assert state.name == "Completed"
    assert_ledger_exact(sandbox, applied_once=False)
    ledger = sandbox.counters()["ledger"]
    assert ledger["deleted"] == 1  # the compensation ran once...
    assert ledger["applied"] == PAGES + 1  # ...and the flow retry applied that batch again
    ever = sandbox.ledger_state()["applications_ever"]
    assert sorted(set(ever.values())) == [1, 2]  # one batch's records went in, out and in
    summary = state.result()
    assert summary.resumed and summary.batches_applied + summary.batches_replayed == PAGES - 3
    # Posted beside page 4's batch, applied but not yet recorded when it failed: replays.
    assert summary.batches_replayed <= settings().ledger_posts_in_flight - 1
    assert summary.pages_fetched == 0  # the retry's walk was done: nothing fetched again


def test_quarantine_reasons_name_the_field(sandbox: Sandbox) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    state = run_sync()

    run_filter = ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=run_filter))
    (table,) = [artifact for artifact in artifacts if artifact.type == "table"]
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    reasons = {row["record_id"]: row["reason"] for row in rows}
    invalid = sandbox.dataset.invalid
    assert set(reasons) == set(invalid)
    expected_start = {
        "missing_field": ("account: Field required", "currency: Field required"),
        "unknown_currency": ("currency: unknown currency",),
        "bad_amount": ("amount: not a decimal",),
        "negative_amount": ("amount: negative amount",),
    }
    for record_id, kind in invalid.items():
        assert reasons[record_id].startswith(expected_start[kind]), (kind, reasons[record_id])


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("batch_size", 0, "batch_size"),
        ("batch_size", 501, "batch_size"),
        ("batch_size", "many", "batch_size"),
        ("records_api", "no-such-block", "records_api"),
        ("ledger_api", "no-such-block", "ledger_api"),
        ("max_records", 0, "max_records"),
    ],
)
def test_bad_parameters_fail_by_name_before_any_ledger_request(
    sandbox: Sandbox, name: str, value: object, field: str
) -> None:
    from flows.ledger_sync import ledger_sync

    with pytest.raises(Exception, match=field):
        ledger_sync(**{"batch_size": 100, name: value})
    assert sandbox.counters()["ledger"]["requests"] == 0


@pytest.mark.parametrize("kill_after_batches", [1, 6])
def test_sigkill_while_posts_are_unanswered_then_new_run_is_exact(
    sandbox: Sandbox, kill_after_batches: int
) -> None:
    """Kill the flow's process while the ledger holds POSTs it applied but did not answer:
    the next run replays at most the POSTs that were in flight, and applies nothing twice."""
    in_flight = settings().ledger_posts_in_flight
    sandbox.set_faults("ledger", delay_after_apply=0.4)
    process = start_sync_process()
    kill_when(process, lambda: applied(sandbox) >= kill_after_batches, after=0.1)
    applied_at_kill = applied(sandbox)
    assert kill_after_batches <= applied_at_kill < PAGES
    sandbox.set_faults("ledger")
    sandbox.reset_counters()

    summary = run_sync().result()

    assert_ledger_exact(sandbox)  # no record was ever applied twice
    counters = sandbox.counters()
    assert 1 <= counters["ledger"]["replayed"] <= in_flight  # the POSTs the kill interrupted
    assert counters["ledger"]["applied"] == PAGES - applied_at_kill
    assert summary.resumed and summary.pages_fetched == 0  # every page came from a checkpoint
    assert page_fetches(sandbox) == {}
    assert summary.total_eur == sandbox.dataset.expected_total_eur()


@pytest.mark.parametrize("delay", [0.0, 0.013, 0.029, 0.047])
def test_sigkill_at_any_moment_of_the_load_then_new_run_is_exact(
    sandbox: Sandbox, delay: float
) -> None:
    """Kill at assorted moments of the load with a faulty ledger; the next run is exact."""
    sandbox.set_faults("ledger", error_rate=0.15, drop_rate=0.05, drop_after_apply_rate=0.05)
    process = start_sync_process()
    kill_when(process, lambda: applied(sandbox) >= 3, after=delay)
    sandbox.reset_counters()

    summary = run_sync().result()

    assert_ledger_exact(sandbox)
    assert summary.resumed and page_fetches(sandbox) == {}


@pytest.mark.parametrize("killed_after_pages", [1, 4, 9])
def test_sigkill_during_the_walk_then_the_resume_fetches_no_page_again(
    sandbox: Sandbox, killed_after_pages: int
) -> None:
    """Pages answer slowly; the walk is killed after a few: its pages are not fetched again."""
    sandbox.set_faults("records", slow_rate=1.0, slow_seconds=0.15)
    process = start_sync_process()
    # Killed while the next page is being served (0.15 s; the walk asks for a page only once
    # the one before is checkpointed), however slowly the machine runs the flow.
    asked = killed_after_pages + 1
    kill_when(process, lambda: sandbox.counters()["records"]["requests"] >= asked, 0.05)
    before = page_fetches(sandbox)
    sandbox.set_faults("records")
    sandbox.reset_counters()

    summary = run_sync().result()

    assert_ledger_exact(sandbox)
    after = page_fetches(sandbox)
    assert "" not in after  # the resume did not open a new snapshot
    assert len(refetched(before, after)) <= 1  # at most the page in flight at the kill
    assert summary.resumed and summary.pages == PAGES
    assert sandbox.counters()["ledger"]["applied"] == PAGES


def test_failed_run_resumes_with_prefect_flow_run_retry(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that failed on batch 4 is finished by `prefect flow-run retry`, from batch 4 on."""
    import flows.ledger.load as load

    real_post, calls = load.post, itertools.count(1)

    def post_failing_on_batch_4(*args, **kwargs):
        if next(calls) >= 4:  # the POSTs before it, in flight beside it, are recorded
            raise RuntimeError("bug on batch 4 (injected)")
        return real_post(*args, **kwargs)

    with monkeypatch.context() as patched:  # undo() would also undo the fixtures' settings
        patched.setattr(load, "post", post_failing_on_batch_4)
        state = run_sync()
    assert state.is_failed()
    assert applied(sandbox) == 3
    sandbox.reset_counters()

    retry = subprocess.run(
        [
            str(os.path.join(os.path.dirname(sys.executable), "prefect")),
            "flow-run",
            "retry",
            str(state.state_details.flow_run_id),
            "--entrypoint",
            "flows/ledger_sync.py:ledger_sync",
        ],
        env=dict(os.environ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert retry.returncode == 0, retry.stdout[-3000:] + retry.stderr[-3000:]
    assert_ledger_exact(sandbox)
    assert sandbox.counters()["ledger"]["applied"] == PAGES - 3
    assert page_fetches(sandbox) == {}


def test_report_and_progress_artifacts(sandbox: Sandbox) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    state = run_sync(max_records=500)

    run_filter = ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=run_filter))
    by_type = {artifact.type: artifact for artifact in artifacts}
    assert set(by_type) == {"markdown", "table", "progress"}
    report = by_type["markdown"].data
    for figure in ("| Records | 500 |", "| Quarantined | 25 |", "| Batches applied | 5 |"):
        assert figure in report
    assert "**Status:** completed" in report
    assert float(by_type["progress"].data) == 100.0
