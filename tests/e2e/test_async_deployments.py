"""Fire-and-forget with polling, and pub-sub, end to end: prefect.yaml deployments on a real
server, run by a real process worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sandbox.server import Sandbox
from tests.helpers import ROOT
from tests.helpers.polling import poll_until
from tests.helpers.stack import deploy

PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "local-process"


@pytest.fixture(scope="module")
def worker(prefect_server: str, tmp_path_factory: pytest.TempPathFactory):
    """The prefect.yaml deployments of this pattern, and one process worker for them."""
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PWD": str(ROOT),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    deploy(env, "fire-and-forget", "reconcile-ledger")
    log = (tmp_path_factory.mktemp("worker") / "worker.log").open("wb")
    process = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", POOL],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def test_the_same_idempotency_key_gives_one_run(worker) -> None:
    from deployments.trigger import trigger, wait

    key = f"order-{uuid.uuid4()}"
    first = trigger("fire-and-forget/fire-and-forget", {"seconds": 0.5}, key)
    second = trigger("fire-and-forget/fire-and-forget", {"seconds": 0.5}, key)

    assert first == second
    assert wait(first, timeout_seconds=90) == "done after 0.5 s"


def test_a_failed_run_surfaces_its_error(worker) -> None:
    from deployments.trigger import RunDidNotComplete, trigger, wait

    run_id = trigger("fire-and-forget/fire-and-forget", {"seconds": 0, "fail": True})

    with pytest.raises(RunDidNotComplete, match="the job failed after 0"):
        wait(run_id, timeout_seconds=90)


def test_the_overall_timeout_is_honoured(worker) -> None:
    from deployments.trigger import trigger, wait

    run_id = trigger("fire-and-forget/fire-and-forget", {"seconds": 20})
    started = time.monotonic()

    with pytest.raises(TimeoutError, match="after 2"):
        wait(run_id, timeout_seconds=2)
    assert time.monotonic() - started < 5


def cli_run(prefect_server: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m deployments.trigger run fire-and-forget/fire-and-forget ARGUMENTS --wait`."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "deployments.trigger",
            "run",
            "fire-and-forget/fire-and-forget",
            *arguments,
            "--key",
            f"cli-{uuid.uuid4()}",
            "--wait",
            "--timeout",
            "90",
        ],
        env={**os.environ, "PREFECT_API_URL": prefect_server},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_starts_and_waits(worker, prefect_server: str) -> None:
    result = cli_run(prefect_server, "--param", "seconds=0.2")

    assert result.returncode == 0, result.stderr[-2000:]
    run_id, receipt = [*result.stdout.split()[:1], result.stdout.strip().splitlines()[-1]]
    assert uuid.UUID(run_id) and receipt == "done after 0.2 s"
    ui = prefect_server.removesuffix("/api")
    # The run's final state and its page in the UI, last.
    assert result.stderr.splitlines()[-2:] == ["Completed", f"{ui}/runs/flow-run/{run_id}"]


def test_the_cli_ends_a_failed_run_with_its_state_and_exit_code_1(
    worker, prefect_server: str
) -> None:
    result = cli_run(prefect_server, "--param", "seconds=0", "--param", "fail=true")

    assert result.returncode == 1, result.stderr[-2000:]
    run_id = result.stdout.split()[0]
    state, link = result.stderr.splitlines()[-2:]
    assert state.startswith("Failed: ") and "the job failed after 0" in state
    assert link == f"{prefect_server.removesuffix('/api')}/runs/flow-run/{run_id}"


def reconcile_runs_after(started: float) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["reconcile-ledger"])), limit=50
        )
    return [r for r in runs if r.created and r.created.timestamp() >= started - 1]


def wait_for_reconcile(started: float, timeout: float = 90):
    def finished() -> list | None:
        runs = reconcile_runs_after(started)
        return runs if runs and runs[0].state and runs[0].state.is_final() else None

    return poll_until(finished, timeout, interval=1, what="a finished reconcile-ledger run")


@pytest.mark.usefixtures("sandbox_blocks")
def test_a_sync_completion_event_runs_the_reconciliation(worker, sandbox: Sandbox) -> None:
    from flows.ledger_sync import ledger_sync

    started = time.time()
    summary = ledger_sync(batch_size=100)

    runs = wait_for_reconcile(started)
    assert len(runs) == 1 and runs[0].state.is_completed()
    assert runs[0].parameters["ledger_api"] == "sandbox-ledger"
    assert str(runs[0].parameters["reported_total_eur"]) == str(summary.total_eur)


@pytest.mark.usefixtures("sandbox_blocks")
def test_a_published_event_with_a_wrong_total_fails_the_reconciliation(
    worker, sandbox: Sandbox
) -> None:
    from prefect.events import emit_event

    from flows.ledger_sync import COMPLETED_EVENT

    started = time.time()
    emit_event(
        event=COMPLETED_EVENT,
        resource={"prefect.resource.id": f"resilient-flows.ledger-sync.{uuid.uuid4()}"},
        payload={"ledger_api": "sandbox-ledger", "total_eur": "123.45", "snapshot": "x"},
    )

    runs = wait_for_reconcile(started)
    assert runs[0].state.is_failed()  # the empty ledger holds less than reported
    assert "123.45" in runs[0].state.message


def test_deploying_again_is_safe(worker, prefect_server: str) -> None:
    again = deploy({**os.environ, "PREFECT_API_URL": prefect_server}, "fire-and-forget")

    assert "created work pool" not in again  # it already existed
