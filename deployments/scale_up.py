"""`python -m deployments up --profile scale` (`make up-scale`): the scale profile's stack.

Scenario: a user wants the project on a highly available Prefect, as it would run on many
machines, from one command, and every part of it stopped by Ctrl-C.

Solution: `ScaleStack` (deployments/scale.py) with the scale profile's settings: PostgreSQL,
two API replicas behind a load balancer, the background services, Redis messaging, an
S3-compatible object store; then the sandbox upstreams and the webhook receiver, the blocks
and every deployment (as the local `up` does), three process workers and a task worker. It prints
a table of what runs where, then stays up; Ctrl-C (or SIGTERM) stops everything it started.

How to run:
    make up-scale
    .venv/bin/python -m deployments up --profile scale [--home DIR] [--records N]
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import NoReturn

from deployments.object_store import RESULTS_BLOCK
from deployments.scale import ScaleStack


def up_scale(home: Path, records: int, settings: Mapping[str, str]) -> int:
    """Bring the stack up, print what runs where, wait for Ctrl-C; the exit code."""
    from deployments.stack import local_environment
    from deployments.up import deployment_rows, print_table, provision, shown

    os.environ.update(local_environment(home))
    os.environ.setdefault("PWD", str(Path.cwd()))
    # Ctrl-C and SIGTERM stop it alike; Ctrl-C set here too, as a shell that starts a program
    # in the background without job control makes it ignore SIGINT (Python then never raises
    # KeyboardInterrupt).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    stack = ScaleStack(home, settings)
    try:
        print(f"Starting the scale profile's stack (logs in {shown(home)}) ...", flush=True)
        stack.start()
        from sandbox.receiver import Receiver
        from sandbox.server import Sandbox

        with Sandbox(n_records=records) as sandbox, closing(Receiver()) as receiver:
            deployed = provision(home, sandbox.urls, f"{receiver.url}/callbacks")
            if deployed is None:
                print(f"deploy failed: see {home / 'deploy.log'}", file=sys.stderr)
                return 1
            stack.start_workers()
            rows = [*deployment_rows(deployed), None, *stack_rows(stack, settings)]
            print_table(rows, title="resilient-flows: the scale profile's stack")
            ui = stack.api_url.removesuffix("/api")
            print(f"UI: {ui}  (through the balancer). Ctrl-C stops the stack.", flush=True)
            while True:
                time.sleep(1)
                for part in [*stack.workers, *stack.task_workers, stack.services, stack.balancer]:
                    if part is not None and not part.alive():
                        print(f"{part.name} stopped; see {part.log}", file=sys.stderr)
                        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


def stack_rows(stack: ScaleStack, settings: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """What runs where: replicas, services, workers and the replica each talks to, stores."""
    from deployments.up import shown

    rows = []
    if stack.balancer is not None:
        rows.append(("load balancer (HAProxy)", stack.api_url, "PREFECT_API_URL of every part"))
    rows += [
        (f"API replica {n}", replica.api_url, "prefect server start --no-services")
        for n, replica in enumerate(stack.replicas)
    ]
    if stack.services is not None:
        rows.append(("background services", "", f"log {shown(stack.services.log)}"))
    for worker in [*stack.workers, *stack.task_workers]:
        rows.append((worker.name, worker.api_url, f"log {shown(worker.log)}"))
    if stack.object_store is not None:
        rows.append(("object store (moto)", stack.object_store.api_url, f"block {RESULTS_BLOCK}"))
    rows.append(("PostgreSQL", settings["PREFECT_API_DATABASE_CONNECTION_URL"], "Prefect"))
    rows.append(("PostgreSQL", settings["RESILIENT_FLOWS_LEDGER_INDEX_URL"], "ledger index"))
    redis = f"{settings['PREFECT_REDIS_MESSAGING_HOST']}:{settings['PREFECT_REDIS_MESSAGING_PORT']}"
    rows.append(("Redis", f"redis://{redis}/{settings['PREFECT_REDIS_MESSAGING_DB']}", "messaging"))
    rows.append(("Redis", settings["RESILIENT_FLOWS_REDIS_URL"], "circuit breakers"))
    return rows


def _interrupt(*_: object) -> NoReturn:
    raise KeyboardInterrupt
