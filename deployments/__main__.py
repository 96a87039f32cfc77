"""`python -m deployments COMMAND ...`: the project's deployment tooling.

Commands: `check` (validate prefect.yaml without a server), `deploy` (blocks, work pools,
deployments and the crashed-run automation to the server in PREFECT_API_URL), `run` (trigger
a deployment, optionally waiting for it: see deployments/trigger.py), `up` (the local stack),
`prune` (delete stored state no sync needs: flows/maintenance.py).
"""

from __future__ import annotations

import sys

from deployments import check, deploy, prune, trigger, up

COMMANDS = {
    "check": check.main,
    "deploy": deploy.main,
    "run": lambda argv: trigger.main(["run", *argv]),
    "up": up.main,
    "prune": prune.main,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m deployments {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
