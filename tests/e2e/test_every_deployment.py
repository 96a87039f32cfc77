"""Every process deployment of prefect.yaml, deployed with `python -m deployments deploy` to a
real server and run by a real process worker (and a task worker, for the message queue) with
its default parameters, reaches Completed; runs that pause for approval are approved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from deployments.deploy import select
from deployments.stack import save_callback_block, save_sandbox_blocks
from sandbox.receiver import Receiver
from sandbox.server import Sandbox
from tests.helpers import ROOT
from tests.helpers.stack import deploy, wait_final_approving

PREFECT = str(Path(sys.executable).with_name("prefect"))
PROCESS_DEPLOYMENTS = [d["name"] for d in select(ROOT / "prefect.yaml", [], docker=False)]
APPROVAL = {"approved": True, "reason": "end-to-end test", "approver": "pytest"}


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def runs(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Deploy everything, start the workers, and start one run of every deployment."""
    import redis
    from prefect.client.orchestration import get_client

    redis.Redis.from_url(os.environ["RESILIENT_FLOWS_REDIS_URL"]).flushdb()
    workdir = tmp_path_factory.mktemp("every-deployment")
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PWD": str(ROOT),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        # Checkpoints and queue results of this module's own: earlier tests leave none behind.
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(workdir / "storage"),
    }
    deploy(env)

    with Sandbox(n_records=600, invalid_fraction=0.05, seed=23) as sandbox:
        receiver = Receiver()
        save_sandbox_blocks(sandbox.urls)
        save_callback_block(f"{receiver.url}/callbacks")
        workers = [
            start([PREFECT, "worker", "start", "--pool", "local-process"], env, workdir / "w.log"),
            start([sys.executable, "-m", "flows.message_queue_worker"], env, workdir / "t.log"),
        ]
        try:
            with get_client(sync_client=True) as client:
                by_name = {d.name: d for d in client.read_deployments()}
                started = {
                    name: client.create_flow_run_from_deployment(by_name[name].id).id
                    for name in PROCESS_DEPLOYMENTS
                    if name != "rerun-crashed"
                }
                # Its trigger passes a crashed run; given a run that is not, it leaves it be.
                not_crashed = {"flow_run_id": str(started["fire-and-forget"])}
                started["rerun-crashed"] = client.create_flow_run_from_deployment(
                    by_name["rerun-crashed"].id, parameters=not_crashed
                ).id
            yield {"ids": started, "receiver": receiver, "workdir": workdir}
        finally:
            for worker in workers:
                stop(worker)
            receiver.close()


def wait_final(run_id: UUID, timeout: float = 240):
    return wait_final_approving(run_id, APPROVAL, timeout)


def test_every_flow_has_a_process_deployment() -> None:
    import yaml

    entrypoints = {
        d["entrypoint"]
        for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
        if d["name"] in PROCESS_DEPLOYMENTS
    }
    flow_modules = {
        f"flows.{path.stem}"
        for path in (ROOT / "flows").glob("*.py")
        if "@flow" in path.read_text()
    }
    assert {e.split(":")[0] for e in entrypoints} == flow_modules


@pytest.mark.parametrize("name", PROCESS_DEPLOYMENTS)
def test_the_deployment_completes_with_its_defaults(runs: dict, name: str) -> None:
    run = wait_final(runs["ids"][name])

    assert run.state.is_completed(), (
        f"{name}: {run.state.name}: {run.state.message}; logs in {runs['workdir']}"
    )
    assert run.state.name in ("Completed", "Degraded")


def test_the_approval_run_was_approved_by_the_test(runs: dict) -> None:
    from prefect.client.orchestration import get_client

    run = wait_final(runs["ids"]["approval"])
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(run.id)

    names = [state.name for state in sorted(states, key=lambda state: state.timestamp)]
    assert "Paused" in names and names[-1] == "Completed"


def test_the_callbacks_run_reported_to_the_receiver(runs: dict) -> None:
    import json

    run = wait_final(runs["ids"]["callbacks"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        bodies = [json.loads(item["body"]) for item in runs["receiver"].received]
        if any(body.get("flow_run_id") == str(run.id) for body in bodies):
            return
        time.sleep(0.5)
    raise AssertionError(f"no callback for {run.id}: {runs['receiver'].received}")
