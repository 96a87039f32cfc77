"""The `docker` work pool: how a flow run's container reaches what the deployer's processes reach.

Scenario: a flow run in a container must find the Prefect server, the upstream services,
Redis and its checkpoints, as a flow run of the process worker finds them on its machine;
and what differs between a laptop and a real network must be a setting of the pool, not an
edit of prefect.yaml.

Solution: `deploy --docker` creates the `docker` work pool, when the server lacks it, from
prefect-docker's own base job template, with these job-variable defaults:
- `network_mode`: `RESILIENT_FLOWS_DOCKER_NETWORK` (default `host`): the container shares the
  machine's network, where a laptop's server, sandbox and Redis listen on loopback. On a real
  network, a Docker network from which the services' addresses are reachable.
- `env`: the project's settings (`RESILIENT_FLOWS_*`) of the deployer's environment, with the
  result storage and ledger index as absolute paths, so a container shares the breakers, the
  ledger index and the checkpoints of everything else. Prefect's own settings (the API URL,
  a storage block) the worker hands to each container itself.
- `volumes`: the local state those paths name, mounted at the same path: the result storage
  directory and a SQLite ledger index's directory. None when results live in a storage block
  and the index in PostgreSQL (the scale profile): then nothing is local.
An existing pool is left as it is: a user's edits on it (the UI's work-pool form, or
`prefect work-pool update docker --base-job-template FILE`) win. The deciding is the pure
`container_job_variables`; `docker_pool_template` reads the environment around it.

How to run:
    python -m deployments deploy --docker
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SETTINGS_PREFIX = "RESILIENT_FLOWS_"
NETWORK_SETTING = "RESILIENT_FLOWS_DOCKER_NETWORK"


def container_job_variables(
    environ: Mapping[str, str],
    storage_path: Path | None,
    ledger_index_url: str,
) -> dict[str, Any]:
    """The pool's defaults for `network_mode`, `env` and `volumes`, from the deployer's
    environment, its local result storage directory (None: results go to a storage block)
    and the ledger index's URL."""
    env = {
        name: value
        for name, value in sorted(environ.items())
        if name.startswith(SETTINGS_PREFIX) and name != NETWORK_SETTING
    }
    env["RESILIENT_FLOWS_LEDGER_INDEX_URL"] = ledger_index_url
    shared: list[Path] = []
    if storage_path is not None:
        env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(storage_path)
        shared.append(storage_path)
    if ledger_index_url.startswith("sqlite:///"):
        shared.append(Path(ledger_index_url.removeprefix("sqlite:///")).parent)
    return {
        "network_mode": environ.get(NETWORK_SETTING, "host"),
        "env": env,
        "volumes": [f"{path}:{path}" for path in outermost(shared)],
    }


def outermost(paths: list[Path]) -> list[Path]:
    """`paths` without those inside another of them (one mount covers both)."""
    unique = sorted(set(paths))
    return [p for p in unique if not any(o != p and p.is_relative_to(o) for o in unique)]


def with_defaults(template: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a base job template whose variables default to `defaults`."""
    result = copy.deepcopy(template)
    for name, value in defaults.items():
        result["variables"]["properties"][name]["default"] = value
    return result


def docker_pool_template(environ: Mapping[str, str]) -> dict[str, Any]:
    """prefect-docker's base job template with this machine's defaults."""
    from prefect.settings import (
        PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
    )
    from prefect_docker.worker import DockerWorker

    from toolkit.ledger_index import ledger_index_url

    local = not PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK.value()
    storage = Path(PREFECT_RESULTS_LOCAL_STORAGE_PATH.value()).resolve() if local else None
    return with_defaults(
        DockerWorker.get_default_base_job_template(),
        container_job_variables(environ, storage, ledger_index_url()),
    )
