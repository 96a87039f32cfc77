"""`python -m deployments deploy [NAME ...] [--docker]`: the project on the server it points at.

Scenario: a user has a Prefect server (their laptop's, a shared one) and wants this
project's blocks, work pools and deployments on it in one command, again and again.

Solution: check prefect.yaml (deployments/check.py), register the custom blocks (`prefect
block register -m blocks`), create the work pools the chosen deployments use that the server
lacks (known pools only), then `prefect --no-prompt deploy` them: by default every deployment
on the process pool, with `--docker` every Docker variant (after creating the Prefect
variables that name the image, if missing), or the ones named (with the deployment that
re-runs crashed runs, flows/rerun_crashed.py, when one of them is tagged `rerun-on-crash`),
and last install the automation that marks dead runs Crashed
(deployments/crash_detection.py). Each step is
idempotent; `PREFECT_API_AUTH_STRING` in the environment authenticates every call. On its
own it shows Prefect's deploy panels; `deploy(..., log=file)` (what `up` calls) writes them
to a file.

How to run:
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments deploy
    python -m deployments deploy fire-and-forget reconcile-ledger
    python -m deployments deploy --docker        # needs a Docker engine (and a registry)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml

from deployments.check import KNOWN_WORK_POOLS, check_file
from deployments.crash_detection import install_crash_automations
from deployments.stack import PROJECT_ROOT, prefect_cli, register_blocks

RERUN_ENTRYPOINT = "flows.rerun_crashed:rerun_crashed"

DOCKER_VARIABLES = {
    "docker_registry": "localhost:5000",
    "docker_image": "resilient-flows",
    "docker_base_image": "prefecthq/prefect:3.9.1-python3.11",
}
"""Prefect variables naming the Docker variants' image and the image it is built on, with the
defaults `--docker` creates."""


def select(path: Path, names: list[str], docker: bool) -> list[dict[str, Any]]:
    """The deployments named (all on the process pool, or all Docker variants, if none are)."""
    deployments = yaml.safe_load(path.read_text())["deployments"]
    if names:
        unknown = set(names) - {d.get("name") for d in deployments}
        if unknown:
            raise SystemExit(f"no deployment named {', '.join(sorted(unknown))} in {path}")
        return with_rerun([d for d in deployments if d.get("name") in names], deployments)
    wanted = "docker" if docker else "process"
    return [d for d in deployments if KNOWN_WORK_POOLS[pool_of(d)] == wanted]


def with_rerun(selected: list[dict[str, Any]], every: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`selected`, and the deployment that re-runs their crashed runs (flows/rerun_crashed.py,
    on a pool of the same kind) if one of them is tagged for it: without it their crashed
    runs would stay down."""
    from flows.rerun_crashed import RERUN_TAG  # imports prefect: not before `up` sets it up

    kinds = {KNOWN_WORK_POOLS[pool_of(d)] for d in selected if RERUN_TAG in d.get("tags", [])}
    rerun = [
        d
        for d in every
        if d.get("entrypoint") == RERUN_ENTRYPOINT
        and KNOWN_WORK_POOLS[pool_of(d)] in kinds
        and d not in selected
    ]
    return selected + rerun


def pool_of(deployment: dict[str, Any]) -> str:
    return (deployment.get("work_pool") or {}).get("name")


def ensure_work_pools(pools: set[str], log: TextIO | None = None) -> None:
    """Create the missing work pools among `pools`; a Docker pool with the job variables
    that let its containers reach this machine's services (deployments/docker_pool.py)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from deployments.docker_pool import docker_pool_template

    with get_client(sync_client=True) as client:
        for name in sorted(pools):
            pool = WorkPoolCreate(name=name, type=KNOWN_WORK_POOLS[name])
            if pool.type == "docker":  # left unset otherwise: the server fills in the type's own
                pool.base_job_template = docker_pool_template(os.environ)
            try:
                client.create_work_pool(pool)
                print(f"created work pool {name}", file=log)  # None: the terminal
            except ObjectAlreadyExists:
                pass


def ensure_docker_variables(log: TextIO | None = None) -> None:
    """Create the image-naming variables the server lacks; never overwrite a user's value."""
    from prefect.variables import Variable

    for name, default in DOCKER_VARIABLES.items():
        if Variable.get(name) is None:
            Variable.set(name, default)
            print(f"created variable {name}={default}", file=log)  # None: the terminal


def deploy(
    names: list[str], docker: bool, log: TextIO | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Check prefect.yaml, then blocks, work pools, the chosen deployments and the crashed-run
    automation that marks dead runs Crashed on the server; (exit code, the deployments deployed).
    What it says, and all of `prefect deploy`'s output, goes to `log` (a file) if given, else
    to the terminal."""
    path = PROJECT_ROOT / "prefect.yaml"
    problems = check_file(path)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1, []
    selected = select(path, names, docker)
    register_blocks()
    ensure_work_pools({pool_of(d) for d in selected}, log)
    if any(KNOWN_WORK_POOLS[pool_of(d)] == "docker" for d in selected):
        ensure_docker_variables(log)
    if log is not None:
        log.flush()  # before `prefect deploy` writes to the same file
    selection = [arg for d in selected for arg in ("--name", d["name"])]
    deployed = subprocess.run(
        [prefect_cli(), "--no-prompt", "deploy", *selection],
        cwd=PROJECT_ROOT,
        check=False,
        stdout=log,
        stderr=None if log is None else subprocess.STDOUT,
    )
    if deployed.returncode != 0:
        return deployed.returncode, []
    for name in install_crash_automations():
        print(f"installed automation {name!r} (crashed runs)", file=log)
    return 0, selected


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments deploy")
    parser.add_argument("names", nargs="*", metavar="NAME", help="deployments (default: all)")
    parser.add_argument(
        "--docker", action="store_true", help="the Docker variants instead (needs Docker)"
    )
    args = parser.parse_args(argv)
    # On its own, deploy shows Prefect's panels: they say how to start a worker, which is
    # the user's next step here (`up` keeps them in its log: it starts the workers itself).
    code, _ = deploy(args.names, args.docker)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
