"""Crashed runs re-run a bounded number of times, and never one that cannot start.

The decision is a pure function of the run's state history; end to end, on a server of this
module's own with a process worker, the deployment `rerun-crashed` is started by each crash
of a run tagged `rerun-on-crash`: a misspelled parameter and an entrypoint that does not
import each end Failed after one attempt, saying why; a run that keeps crashing stops after
`MOST_ATTEMPTS`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from deployments.crash_detection import TAG
from flows.rerun_crashed import (
    MOST_ATTEMPTS,
    RERUN_MESSAGE,
    RERUN_TAG,
    Seen,
    attempts,
    decide,
    run_id_of,
)
from tests.helpers import ROOT
from tests.helpers.polling import poll_until
from tests.helpers.stack import deploy, own_server

CLAIM = [Seen("SCHEDULED"), Seen("PENDING"), Seen("PENDING", "Submitting")]
STARTED = [*CLAIM, Seen("RUNNING")]
CRASHED = Seen("CRASHED", "Process exited with status code: 1.")


def test_each_claim_by_a_worker_is_an_attempt_whether_or_not_the_flow_ran() -> None:
    history = [*STARTED, CRASHED, *CLAIM, CRASHED, *STARTED, Seen("FAILED")]
    assert attempts(history) == 3
    assert attempts([Seen("SCHEDULED")]) == 0


def test_a_run_that_crashed_before_its_flow_started_is_not_run_again() -> None:
    decision = decide([*CLAIM, CRASHED], "SignatureMismatchError: batchsize")
    assert not decision.rerun
    assert decision.message == (
        "Failed before its flow started, not run again: SignatureMismatchError: batchsize"
    )
    # Even when an earlier attempt ran: this one did not, and the next would not either.
    assert not decide([*STARTED, CRASHED, *CLAIM, CRASHED], None).rerun
    assert decide([*CLAIM, CRASHED], None).message.endswith(CRASHED.message)


def test_a_run_that_crashed_mid_flow_runs_again_until_its_attempts_are_spent() -> None:
    history: list[Seen] = []
    for attempt in range(1, MOST_ATTEMPTS + 1):
        history += [*STARTED, CRASHED]
        decision = decide(history, "Killed")
        assert decision.rerun == (attempt < MOST_ATTEMPTS), attempt
    assert decision.message == f"Crashed on each of {MOST_ATTEMPTS} attempts, not run again: Killed"
    assert decide([*STARTED, CRASHED], None).message == RERUN_MESSAGE


def test_the_run_is_named_by_its_id_or_its_event_resource() -> None:
    assert run_id_of("prefect.flow-run.1234") == "1234"
    assert run_id_of("1234") == "1234"


# -- end to end ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with own_server(tmp_path_factory.mktemp("rerun-crashed-home")) as api_url:
        yield api_url


@pytest.fixture(scope="module")
def worker(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`deployments deploy ledger-sync` (which brings `rerun-crashed` along) and a process
    worker; the worker's log."""
    env = {**os.environ, "PREFECT_API_URL": server, "PWD": str(ROOT)}
    env["PREFECT_WORKER_QUERY_SECONDS"] = "1"
    deployed = deploy(env, "ledger-sync")
    assert "rerun-crashed" in deployed
    log = tmp_path_factory.mktemp("rerun-crashed") / "worker.log"
    prefect = str(Path(sys.executable).with_name("prefect"))
    process = subprocess.Popen(
        [prefect, "worker", "start", "--pool", "local-process"],
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield log
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def history_of(run_id: UUID) -> list[Seen]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
    return [Seen(state.type.value, state.message) for state in states]


def final(run_id: UUID, timeout: float = 180):
    from prefect.client.orchestration import get_client

    def settled():
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
        return run if run.state and run.state.is_final() and not run.state.is_crashed() else None

    return poll_until(settled, timeout, 1, f"run {run_id} past its crash")


def run_of(deployment: str, **options) -> UUID:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        return client.create_flow_run_from_deployment(found.id, **options).id


@pytest.mark.timeout(300)
def test_a_misspelled_parameter_ends_failed_after_one_attempt_saying_why(worker: Path) -> None:
    run_id = run_of("ledger-sync/ledger-sync", parameters={"batchsize": 5})

    run = final(run_id)

    history = history_of(run_id)
    assert run.state.type.value == "FAILED", history
    assert run.state.message.startswith("Failed before its flow started, not run again:")
    assert "SignatureMismatchError" in run.state.message and "batchsize" in run.state.message
    assert attempts(history) == 1, history


@pytest.mark.timeout(300)
def test_an_entrypoint_that_does_not_import_ends_failed_after_one_attempt(worker: Path) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        sync = client.read_deployment_by_name("ledger-sync/ledger-sync")
        broken = client.create_deployment(
            flow_id=sync.flow_id,
            name="broken-entrypoint",
            entrypoint="flows.no_such_module:ledger_sync",
            work_pool_name="local-process",
            pull_steps=sync.pull_steps,
            job_variables=sync.job_variables,
            tags=sync.tags,
        )
        run_id = client.create_flow_run_from_deployment(broken).id

    run = final(run_id)

    assert run.state.type.value == "FAILED", history_of(run_id)
    assert "flows.no_such_module" in run.state.message, run.state.message
    assert attempts(history_of(run_id)) == 1


def crash_once(run_id: UUID) -> None:
    """One attempt that starts its flow and crashes, as a worker reports it."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Pending, Running

    with get_client(sync_client=True) as client:
        for state in (Pending(), Running(), Crashed(message="the process died")):
            assert client.set_flow_run_state(run_id, state).status.value == "ACCEPT", state


@pytest.mark.timeout(600)
def test_a_run_that_keeps_crashing_stops_after_its_attempts(worker: Path) -> None:
    """Runs of a deployment on a pool no worker serves: their attempts are made by hand."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="no-worker", type="process"))
        sync = client.read_deployment_by_name("ledger-sync/ledger-sync")
        unserved = client.create_deployment(
            flow_id=sync.flow_id,
            name="unserved",
            entrypoint=sync.entrypoint,
            work_pool_name="no-worker",
            tags=[TAG],
        )
        crashing = client.create_flow_run_from_deployment(unserved, tags=[RERUN_TAG]).id
        untagged = client.create_flow_run_from_deployment(unserved).id
    crash_once(untagged)

    for attempt in range(1, MOST_ATTEMPTS):
        crash_once(crashing)
        scheduled = poll_until(
            lambda: (seen := history_of(crashing))[-1].type == "SCHEDULED" and seen,
            180,
            1,
            f"the re-run after attempt {attempt}",
        )
        assert scheduled[-1].message == RERUN_MESSAGE
    crash_once(crashing)

    run = final(crashing)
    assert run.state.type.value == "FAILED"
    assert run.state.message.startswith(f"Crashed on each of {MOST_ATTEMPTS} attempts")
    assert history_of(untagged)[-1].type == "CRASHED"  # not tagged: left to a person
