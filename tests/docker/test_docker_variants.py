"""The Docker variants for real (`make test-docker`): `python -m deployments deploy --docker`
against a real server builds the image once from the repo's Dockerfile, pushes it to a
registry and deploys every variant; a Docker worker (prefect-docker) runs each in a container
of that image with its default parameters to Completed; a sync's container killed mid-load
is run again and resumes from the checkpoints it shared with the host, exact.

The engine, the registry and the base image are the machine's or made here
(tests/helpers/docker.py); the containers reach the server, the sandbox and Redis through the
pool's job variables that `deploy --docker` set (deployments/docker_pool.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from deployments.crash_detection import RERUN_MESSAGE
from deployments.deploy import select
from deployments.stack import save_callback_block, save_sandbox_blocks, stop_group
from sandbox.receiver import Receiver
from sandbox.server import Sandbox
from tests.helpers import ROOT
from tests.helpers.docker import base_image, client, docker_engine, registry
from tests.helpers.ledger import assert_ledger_exact, page_fetches
from tests.helpers.polling import poll_until
from tests.helpers.stack import wait_final_approving

PREFECT = str(Path(sys.executable).with_name("prefect"))
VARIANTS = [d["name"] for d in select(ROOT / "prefect.yaml", [], docker=True)]
APPROVAL = {"approved": True, "reason": "docker test", "approver": "pytest"}
FLOW_RUN_LABEL = "io.prefect.flow-run-id"
KILL_BATCHES = 10  # 1000 records in batches of 100, each POST held back 0.5 s


@pytest.fixture(scope="module")
def stack(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Engine, registry, base image; the variants deployed; a Docker worker and a queue
    consumer in a container; the sandbox and a webhook receiver. Stopped at the end."""
    import redis
    from prefect.variables import Variable

    redis.Redis.from_url(os.environ["RESILIENT_FLOWS_REDIS_URL"]).flushdb()
    workdir = tmp_path_factory.mktemp("docker")
    with docker_engine() as docker_host, registry() as registry_address:
        env = {
            **os.environ,
            "DOCKER_HOST": docker_host,
            "PREFECT_API_URL": prefect_server,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            # The state the containers share with this machine: the pool mounts both.
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(workdir / "storage"),
            "RESILIENT_FLOWS_LEDGER_INDEX_URL": f"sqlite:///{workdir}/index/ledger.sqlite",
        }
        (workdir / "storage").mkdir()
        (workdir / "index").mkdir()
        Variable.set("docker_registry", registry_address, overwrite=True)
        Variable.set("docker_base_image", base_image(docker_host), overwrite=True)
        deployed = subprocess.run(
            [sys.executable, "-m", "deployments", "deploy", "--docker"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        (workdir / "deploy.log").write_text(deployed.stdout + deployed.stderr)
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        image = f"{registry_address}/resilient-flows:0.1.0"
        engine = client(docker_host)
        with Sandbox(n_records=600, invalid_fraction=0.05, seed=29) as sandbox:
            receiver = Receiver()
            save_sandbox_blocks(sandbox.urls)
            save_callback_block(f"{receiver.url}/callbacks")
            worker = subprocess.Popen(
                [PREFECT, "worker", "start", "--pool", "docker", "--type", "docker"],
                env=env,
                cwd=workdir,
                stdout=(workdir / "worker.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            consumer = start_consumer(engine, image)
            try:
                yield {
                    "deploy_log": deployed.stdout,
                    "engine": engine,
                    "image": image,
                    "registry": registry_address,
                    "sandbox": sandbox,
                    "workdir": workdir,
                }
            finally:
                stop_group(worker)
                consumer.remove(force=True)
                for container in engine.containers.list(
                    all=True, filters={"label": FLOW_RUN_LABEL}
                ):
                    container.remove(force=True)
                receiver.close()


def start_consumer(engine: Any, image: str) -> Any:
    """The message queue's consumer, in a container of the image, set up as the pool sets up
    a flow run's container (its job variables' defaults)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        defaults = {
            name: spec.get("default")
            for name, spec in prefect.read_work_pool("docker")
            .base_job_template["variables"]["properties"]
            .items()
        }
    return engine.containers.run(
        image,
        ["python", "-m", "flows.message_queue_worker"],
        detach=True,
        network_mode=defaults["network_mode"],
        volumes=defaults["volumes"],
        environment={**defaults["env"], "PREFECT_API_URL": os.environ["PREFECT_API_URL"]},
        working_dir="/opt/resilient-flows",
    )


def start_run(name: str, **parameters: Any) -> UUID:
    """A run of the deployment `name`, with `parameters` over its defaults."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        (deployment,) = [d for d in prefect.read_deployments() if d.name == name]
        return prefect.create_flow_run_from_deployment(deployment.id, parameters=parameters).id


def wait_final(run_id: UUID, timeout: float = 420):
    return wait_final_approving(run_id, APPROVAL, timeout)


def settled(run_id: UUID) -> Any:
    """The run once final and not Crashed (a crashed run may yet be run again), else None."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(run_id)
    return run if run.state.is_final() and not run.state.is_crashed() else None


def state_history(run_id: UUID) -> list[tuple[str, str]]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        states = sorted(prefect.read_flow_run_states(run_id), key=lambda s: s.timestamp)
    return [(state.name, state.message or "") for state in states]


@pytest.fixture(scope="module")
def default_runs(stack: dict) -> dict[str, UUID]:
    """One run of every variant, with its defaults, started at once."""
    return {name: start_run(name) for name in VARIANTS}


def test_deploy_builds_the_image_once_and_pushes_it(stack: dict) -> None:
    # Docker's own line (pip's "Successfully built resilient-flows" names no image id).
    builds = re.findall(r"^Successfully built [0-9a-f]{12}$", stack["deploy_log"], re.MULTILINE)
    assert len(builds) == 1, stack["deploy_log"][-2000:]
    with urllib.request.urlopen(f"http://{stack['registry']}/v2/resilient-flows/tags/list") as r:
        assert "0.1.0" in json.load(r)["tags"]
    # What the registry serves is what was built: its digest is the local image's.
    local = stack["engine"].images.get(stack["image"])
    pushed = stack["engine"].images.get_registry_data(stack["image"])
    assert f"{stack['image'].rsplit(':', 1)[0]}@{pushed.id}" in local.attrs["RepoDigests"]


@pytest.mark.parametrize("name", VARIANTS)
def test_the_variant_completes_in_a_container_with_its_defaults(
    stack: dict, default_runs: dict[str, UUID], name: str
) -> None:
    run = wait_final(default_runs[name])

    assert run.state.is_completed(), (
        f"{name}: {run.state.name}: {run.state.message}; logs in {stack['workdir']}"
    )
    (container,) = stack["engine"].containers.list(
        all=True, filters={"label": f"{FLOW_RUN_LABEL}={run.id}"}
    )
    assert container.attrs["Config"]["Image"] == stack["image"]  # as pushed


def test_a_sync_whose_container_is_killed_is_run_again_and_resumes_exact(stack: dict) -> None:
    from deployments.stack import start_sandbox_fleet, sync_parameters

    (sandbox,) = start_sandbox_fleet(1, records=1000, prefix="killed")
    try:
        sandbox.set_faults("ledger", slow_rate=1.0, slow_seconds=0.5)
        run_id = start_run(
            "ledger-sync-docker",
            **sync_parameters(
                "killed", 0, approval_above_eur=None, approval_above_quarantine_rate=None
            ),
        )
        poll_until(lambda: sandbox.counters()["ledger"]["applied"] >= 2, 300, 0.2, "loading")
        (container,) = stack["engine"].containers.list(
            filters={"label": f"{FLOW_RUN_LABEL}={run_id}"}
        )
        container.kill()  # SIGKILL: the flow run's process and its container end at once
        applied_at_kill = sandbox.counters()["ledger"]["applied"]
        assert applied_at_kill < KILL_BATCHES
        sandbox.set_faults("ledger")
        sandbox.reset_counters()

        # Crashed is final, but the re-run automation takes the run on from there.
        run = poll_until(lambda: settled(run_id), 420, 1, "a run settled past its crash")

        assert run.state.name == "Completed", state_history(run_id)
        assert_ledger_exact(sandbox)  # every record once, nothing applied twice
        history = state_history(run_id)
        assert "Crashed" in [name for name, _ in history], history  # the worker saw it die
        assert ("AwaitingRetry", RERUN_MESSAGE) in history, history  # and it was run again
        assert run.run_count >= 2
        # In a new container, from the checkpoints the killed one left: no page fetched
        # again, no new snapshot, only the batches not yet applied (and the one in flight).
        assert page_fetches(sandbox) == {}
        assert sandbox.counters()["ledger"]["applied"] <= KILL_BATCHES - applied_at_kill + 1
        containers = stack["engine"].containers.list(
            all=True, filters={"label": f"{FLOW_RUN_LABEL}={run_id}"}
        )
        assert len(containers) >= 2
    finally:
        sandbox.stop()
