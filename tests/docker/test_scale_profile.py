"""The Docker variant of ledger_sync on the scale profile's stack (deployments/scale.py): a
Docker worker on its load-balanced API, containers that share nothing with this machine but
the network, checkpoints in the stack's object store and the ledger index in PostgreSQL.

`deploy --docker` against that stack creates the `docker` pool with no volume (there is
nothing local to share); a sync's container SIGKILLed mid-load is resumed by a new container
from the checkpoints the killed one wrote to the object store, exact, no page fetched again.
Each container's image is pulled from the registry first (pull policy Always), as a worker
on another machine gets it. The engine, registry and base image are the session's
(tests/docker/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.object_store import RESULTS_BLOCK
from deployments.stack import stop_group
from tests.docker.helpers import (
    deploy_docker,
    kill_a_sync_and_see_it_resume_exact,
    pool_defaults,
    remove_run_containers,
    start_docker_worker,
)
from tests.helpers.docker import client
from tests.scale.helpers import fresh_scale_stack, stored_objects

DATABASE = "resilient_flows_test_docker"


@pytest.fixture(scope="module")
def stack(
    docker_host: str,
    registry_address: str,
    docker_base: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """The scale stack with no process worker; ledger-sync-docker deployed on it and a Docker
    worker on its balancer. The engine's client and the worker's log."""
    from prefect.variables import Variable

    home = Path(tmp_path_factory.mktemp("scale-docker"))
    with fresh_scale_stack(home, DATABASE) as scale:
        Variable.set("docker_registry", registry_address)
        Variable.set("docker_base_image", docker_base)
        env = {**os.environ, "DOCKER_HOST": docker_host, "PREFECT_API_URL": scale.api_url}
        deploy_docker(env, home, "ledger-sync-docker")
        worker = start_docker_worker(env, home)
        engine = client(docker_host)
        try:
            yield {"engine": engine, "worker_log": home / "worker.log"}
        finally:
            stop_group(worker)
            remove_run_containers(engine)


def test_the_pool_mounts_nothing_when_state_lives_in_object_storage_and_postgresql(
    stack: dict[str, Any],
) -> None:
    defaults = pool_defaults()

    assert defaults["volumes"] == []
    assert defaults["env"]["RESILIENT_FLOWS_LEDGER_INDEX_URL"].startswith("postgresql+psycopg://")
    assert "PREFECT_RESULTS_LOCAL_STORAGE_PATH" not in defaults["env"]


@pytest.mark.timeout(600)
def test_a_killed_sync_resumes_in_a_new_container_from_the_object_store(
    stack: dict[str, Any],
) -> None:
    before = set(stored_objects())

    # As on workers of other machines, each container's image comes from the registry.
    pulled = {"image_pull_policy": "Always"}
    containers = kill_a_sync_and_see_it_resume_exact(stack["engine"], "scale-killed", pulled)

    # Nothing of this machine's disk was in either container: the worker handed each the
    # profile's storage block, and the checkpoints the second one read are in the store.
    for container in containers:
        assert container.attrs["Mounts"] == []
        setting = f"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK=s3-bucket/{RESULTS_BLOCK}"
        assert setting in container.attrs["Config"]["Env"]
    # The resumed sync's state is in the store, and it deleted the pages of its finished walk.
    written = set(stored_objects()) - before
    assert any("/sync/" in key for key in written), sorted(written)[:20]
    assert not [key for key in written if "/walk-page/" in key], sorted(written)[:20]
    pulls = stack["worker_log"].read_text().count("Pulling image")
    assert pulls == len(containers), stack["worker_log"]
