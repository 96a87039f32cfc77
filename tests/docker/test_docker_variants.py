"""The Docker variants for real (`make test-docker`): `python -m deployments deploy --docker`
against a real server builds the image once from the repo's Dockerfile, pushes it to a
registry and deploys every variant; a Docker worker (prefect-docker) runs each in a container
of that image with its default parameters to Completed; a sync's container killed mid-load
is run again and resumes from the checkpoints it shared with the host, exact.

This is the local profile: results and the ledger index in directories the pool mounts into
every container. On the scale profile's stack they live in its object store and PostgreSQL
(test_scale_profile.py). The engine, the registry and the base image are the machine's or made
here (tests/docker/conftest.py); the containers reach the server, the sandbox and Redis
through the pool's job variables that `deploy --docker` set (deployments/docker_pool.py)."""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from deployments.deploy import select
from deployments.stack import save_callback_block, save_sandbox_blocks, stop_group
from sandbox.receiver import Receiver
from sandbox.server import Sandbox
from tests.docker.helpers import (
    containers_of,
    deploy_docker,
    kill_a_sync_and_see_it_resume_exact,
    pool_defaults,
    remove_run_containers,
    start_docker_worker,
    start_run,
)
from tests.helpers import ROOT
from tests.helpers.docker import client
from tests.helpers.stack import wait_final_approving

VARIANTS = [d["name"] for d in select(ROOT / "prefect.yaml", [], docker=True)]
APPROVAL = {"approved": True, "reason": "docker test", "approver": "pytest"}


@pytest.fixture(scope="module")
def stack(
    prefect_server: str,
    docker_host: str,
    registry_address: str,
    docker_base: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict]:
    """The variants deployed; a Docker worker and a queue consumer in a container; the sandbox
    and a webhook receiver. Stopped at the end."""
    import redis
    from prefect.variables import Variable

    redis.Redis.from_url(os.environ["RESILIENT_FLOWS_REDIS_URL"]).flushdb()
    workdir = tmp_path_factory.mktemp("docker")
    env = {
        **os.environ,
        "DOCKER_HOST": docker_host,
        "PREFECT_API_URL": prefect_server,
        # The state the containers share with this machine: the pool mounts both.
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(workdir / "storage"),
        "RESILIENT_FLOWS_LEDGER_INDEX_URL": f"sqlite:///{workdir}/index/ledger.sqlite",
    }
    (workdir / "storage").mkdir()
    (workdir / "index").mkdir()
    Variable.set("docker_registry", registry_address, overwrite=True)
    Variable.set("docker_base_image", docker_base, overwrite=True)
    deploy_log = deploy_docker(env, workdir)
    image = f"{registry_address}/resilient-flows:0.1.0"
    engine = client(docker_host)
    with Sandbox(n_records=600, invalid_fraction=0.05, seed=29) as sandbox:
        receiver = Receiver()
        save_sandbox_blocks(sandbox.urls)
        save_callback_block(f"{receiver.url}/callbacks")
        worker = start_docker_worker(env, workdir)
        consumer = start_consumer(engine, image)
        try:
            yield {
                "deploy_log": deploy_log,
                "engine": engine,
                "image": image,
                "registry": registry_address,
                "sandbox": sandbox,
                "workdir": workdir,
            }
        finally:
            stop_group(worker)
            consumer.remove(force=True)
            remove_run_containers(engine)
            receiver.close()


def start_consumer(engine: Any, image: str) -> Any:
    """The message queue's consumer, in a container of the image, set up as the pool sets up
    a flow run's container (its job variables' defaults)."""
    defaults = pool_defaults()
    return engine.containers.run(
        image,
        ["python", "-m", "flows.message_queue_worker"],
        detach=True,
        network_mode=defaults["network_mode"],
        volumes=defaults["volumes"],
        environment={**defaults["env"], "PREFECT_API_URL": os.environ["PREFECT_API_URL"]},
        working_dir="/opt/resilient-flows",
    )


def wait_final(run_id: UUID, timeout: float = 420):
    return wait_final_approving(run_id, APPROVAL, timeout)


@pytest.fixture(scope="module")
def default_runs(stack: dict) -> dict[str, UUID]:
    """One run of every variant, with its defaults, started at once; `rerun-crashed-docker`
    (its trigger passes a crashed run) given a run that is not crashed, which it leaves be."""
    runs = {name: start_run(name) for name in VARIANTS if name != "rerun-crashed-docker"}
    not_crashed = str(runs["fire-and-forget-docker"])
    return {
        **runs,
        "rerun-crashed-docker": start_run("rerun-crashed-docker", flow_run_id=not_crashed),
    }


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
    (container,) = containers_of(stack["engine"], run.id)
    assert container.attrs["Config"]["Image"] == stack["image"]  # as pushed


def test_a_sync_whose_container_is_killed_is_run_again_and_resumes_exact(stack: dict) -> None:
    containers = kill_a_sync_and_see_it_resume_exact(stack["engine"], "killed")

    # From the checkpoints on this machine's disk, which each container had mounted.
    storage = str(stack["workdir"] / "storage")
    for container in containers:
        assert storage in [mount["Destination"] for mount in container.attrs["Mounts"]]
