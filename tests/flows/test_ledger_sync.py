"""ledger_sync against a real Prefect server and the real sandbox over loopback.

Every assertion about the ledger is counted at the sandbox: what it applied, replayed,
reversed, and how often each page was fetched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.server import Sandbox
from sandbox.verify import check_ledger

pytestmark = pytest.mark.usefixtures("sandbox_blocks")

PAGES = 10  # 1000 sandbox records at batch_size=100


def run_sync(**parameters):
    from flows.ledger_sync import ledger_sync

    return ledger_sync(**{"batch_size": 100, **parameters})


def assert_exact(sandbox: Sandbox, *, applied_once: bool = True) -> None:
    check = check_ledger(sandbox.dataset.expected_entries(), sandbox.ledger_state())
    assert check.exact, str(check)
    if applied_once:
        assert check.applied_ever_twice == []


def test_clean_run_loads_every_valid_record_once(sandbox: Sandbox) -> None:
    summary = run_sync()

    assert_exact(sandbox)
    assert (summary.records, summary.valid, summary.quarantined) == (1000, 950, 50)
    assert summary.pages == PAGES and summary.batches_applied == PAGES
    assert summary.total_eur == sandbox.dataset.expected_total_eur()
    ledger = sandbox.counters()["ledger"]
    assert (ledger["applied"], ledger["replayed"], ledger["deleted"]) == (PAGES, 0, 0)


def test_faulty_upstreams_still_give_an_exact_ledger(sandbox: Sandbox) -> None:
    sandbox.set_faults("ledger", error_rate=0.15, drop_rate=0.05, drop_after_apply_rate=0.05)
    sandbox.set_faults("records", error_rate=0.15, drop_rate=0.10, rate_limit_rate=0.05)
    sandbox.set_faults("rates", error_rate=0.3)

    summary = run_sync()

    assert_exact(sandbox)
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


def test_second_identical_run_applies_nothing(sandbox: Sandbox) -> None:
    run_sync()
    sandbox.reset_counters()

    summary = run_sync()

    assert_exact(sandbox)
    counters = sandbox.counters()
    assert counters["ledger"]["post_attempts"] == 0
    assert counters["records"]["page_fetches"] == {"": 1}  # only the snapshot-opening page
    assert summary.pages_resumed == PAGES and summary.batches_resumed == PAGES
    assert summary.total_eur == sandbox.dataset.expected_total_eur()


def test_failure_between_post_and_checkpoint_is_compensated(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint write of page 4 fails once: its batch is DELETEd, then applied again."""
    from prefect.results import ResultStore

    real_write = ResultStore.write
    page_writes = []

    def flaky_write(self, *args, **kwargs):
        if str(kwargs.get("key")).startswith("page/"):
            page_writes.append(kwargs["key"])
            if len(page_writes) == 4:
                raise OSError("disk full (injected)")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(ResultStore, "write", flaky_write)

    summary = run_sync()

    assert_exact(sandbox, applied_once=False)
    ledger = sandbox.counters()["ledger"]
    assert ledger["deleted"] == 1  # the compensation ran once...
    assert ledger["applied"] == PAGES + 1  # ...and the retry applied that batch again
    ever = sandbox.ledger_state()["applications_ever"]
    assert sorted(set(ever.values())) == [1, 2]  # one batch's records went in, out and in
    assert summary.pages_resumed == 3  # the flow retry resumed the 3 checkpointed pages


def test_quarantine_reasons_name_the_field(sandbox: Sandbox) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.ledger_sync import ledger_sync

    state = ledger_sync(batch_size=100, return_state=True)

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
    with pytest.raises(Exception, match=field):
        run_sync(**{name: value})
    assert sandbox.counters()["ledger"]["requests"] == 0


def _ledger_applied(sandbox: Sandbox) -> int:
    return sandbox.counters()["ledger"]["applied"]


def start_sync_process(prefect_server: str, result_storage: Path) -> subprocess.Popen[bytes]:
    """`python -m flows.ledger_sync` in a process group of its own, like a deployment run."""
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(result_storage),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flows.ledger_sync", "batch_size=100"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_when(process: subprocess.Popen[bytes], ready: Callable[[], bool], after: float) -> None:
    """SIGKILL the process group `after` seconds once `ready()` holds."""
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert process.poll() is None, "the flow ended before it could be killed"
            assert time.monotonic() < deadline, "the flow made no progress"
            time.sleep(0.01)
        time.sleep(after)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.parametrize("kill_after_batches", [1, 6])
def test_sigkill_while_a_post_is_unanswered_then_new_run_is_exact(
    sandbox: Sandbox, result_storage: Path, prefect_server: str, kill_after_batches: int
) -> None:
    """Kill the flow's process while the ledger holds a POST it applied but did not answer."""
    sandbox.set_faults("ledger", delay_after_apply=0.4)
    process = start_sync_process(prefect_server, result_storage)
    kill_when(process, lambda: _ledger_applied(sandbox) >= kill_after_batches, after=0.1)
    assert _ledger_applied(sandbox) == kill_after_batches
    sandbox.set_faults("ledger")
    sandbox.reset_counters()

    summary = run_sync()

    assert_exact(sandbox)  # no record was ever applied twice
    counters = sandbox.counters()
    assert counters["ledger"]["replayed"] == 1  # the batch the kill interrupted
    assert summary.pages_resumed == kill_after_batches - 1  # the killed batch had no checkpoint
    fetched = counters["records"]["page_fetches"]
    first_page_again = 1 if summary.pages_resumed else 0  # it opens the snapshot: always fetched
    assert sum(fetched.values()) == PAGES - summary.pages_resumed + first_page_again
    assert summary.total_eur == sandbox.dataset.expected_total_eur()


@pytest.mark.parametrize("delay", [0.0, 0.013, 0.029, 0.047])
def test_sigkill_at_any_moment_then_new_run_is_exact(
    sandbox: Sandbox, result_storage: Path, prefect_server: str, delay: float
) -> None:
    """Kill at assorted moments of a run with a faulty ledger; the next run is exact."""
    sandbox.set_faults("ledger", error_rate=0.15, drop_rate=0.05, drop_after_apply_rate=0.05)
    process = start_sync_process(prefect_server, result_storage)
    kill_when(process, lambda: _ledger_applied(sandbox) >= 3, after=delay)
    sandbox.reset_counters()

    summary = run_sync()

    assert_exact(sandbox)
    assert summary.pages_resumed >= 2
    refetched = sandbox.counters()["records"]["page_fetches"]
    assert sum(refetched.values()) == summary.pages - summary.pages_resumed + 1


def test_failed_run_resumes_with_prefect_flow_run_retry(
    sandbox: Sandbox, result_storage: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that failed on page 4 is finished by `prefect flow-run retry`, from page 4 on."""
    import flows.ledger_sync as module

    real_load_page, calls = module.load_page, []

    def load_page_failing_on_page_4(*args, **kwargs):
        calls.append(1)
        if len(calls) >= 4:
            raise RuntimeError("bug on page 4 (injected)")
        return real_load_page(*args, **kwargs)

    monkeypatch.setattr(module, "load_page", load_page_failing_on_page_4)
    state = module.ledger_sync(batch_size=100, return_state=True)
    assert state.is_failed()
    monkeypatch.undo()
    assert _ledger_applied(sandbox) == 3
    sandbox.reset_counters()

    retry = subprocess.run(
        [
            str(Path(sys.executable).with_name("prefect")),
            "flow-run",
            "retry",
            str(state.state_details.flow_run_id),
            "--entrypoint",
            "flows/ledger_sync.py:ledger_sync",
        ],
        env={**os.environ, "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(result_storage)},
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert retry.returncode == 0, retry.stdout[-3000:] + retry.stderr[-3000:]
    assert_exact(sandbox)
    counters = sandbox.counters()
    assert counters["ledger"]["applied"] == PAGES - 3
    assert sum(counters["records"]["page_fetches"].values()) == 1 + PAGES - 3


def test_report_and_progress_artifacts(sandbox: Sandbox) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.ledger_sync import ledger_sync

    state = ledger_sync(batch_size=100, max_records=500, return_state=True)

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
