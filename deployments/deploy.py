"""`python -m deployments deploy [NAME ...]`: put the project on the server in PREFECT_API_URL.

Scenario: a user has a Prefect server (their laptop's, a shared one) and wants this
project's blocks, work pools and deployments on it in one command, again and again.

Solution: register the custom blocks (`prefect block register -m blocks`), create the work
pools prefect.yaml uses that the server lacks (known pools only: see deployments/check.py),
then `prefect --no-prompt deploy` every deployment, or the named ones. Each step is
idempotent; `PREFECT_API_AUTH_STRING` in the environment authenticates every call.

How to run:
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments deploy
    python -m deployments deploy fire-and-forget reconcile-ledger
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from deployments.check import KNOWN_WORK_POOLS, check_file
from deployments.stack import PROJECT_ROOT, prefect_cli, register_blocks


def pools_used(path: Path, names: list[str]) -> set[str]:
    document = yaml.safe_load(path.read_text())
    return {
        (deployment.get("work_pool") or {}).get("name")
        for deployment in document["deployments"]
        if not names or deployment.get("name") in names
    }


def ensure_work_pools(pools: set[str]) -> list[str]:
    """Create the missing work pools among `pools`; the names of those created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    created = []
    with get_client(sync_client=True) as client:
        for name in sorted(pools):
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type=KNOWN_WORK_POOLS[name]))
                created.append(name)
            except ObjectAlreadyExists:
                pass
    return created


def main(argv: list[str]) -> int:
    path = PROJECT_ROOT / "prefect.yaml"
    problems = check_file(path)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    register_blocks()
    for pool in ensure_work_pools(pools_used(path, argv)):
        print(f"created work pool {pool}")
    selection = [arg for name in argv for arg in ("--name", name)] or ["--all"]
    deployed = subprocess.run(
        [prefect_cli(), "--no-prompt", "deploy", *selection], cwd=PROJECT_ROOT, check=False
    )
    return deployed.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
