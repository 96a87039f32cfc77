"""Start a deployment and come back for its result: an API and a CLI.

Scenario: a caller must start work without waiting for it, must not start it twice when its
own request is retried, and later wants the result, or an error that says what went wrong,
within a time it chooses.

Solution:
- `trigger(name, parameters, idempotency_key)` creates a flow run of the deployment with
  Prefect's idempotency key (a key already used for that deployment returns the existing
  run) and returns the run id at once;
- `wait(run_id, timeout_seconds)` polls the run with exponential backoff (0.5 s doubling to
  10 s) until it is final; a completed run gives its result (if the flow persists it), any
  other final state raises `RunDidNotComplete` with the state's name and message, and the
  overall timeout raises `TimeoutError`.

How to run (with PREFECT_API_URL pointing at the server):
    python -m deployments.trigger run fire-and-forget/fire-and-forget --key order-42 \\
        --param seconds=5 [--wait] [--timeout 60]
    python -m deployments.trigger wait <run-id> [--timeout 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any
from uuid import UUID

from toolkit.cli import parse_parameters
from toolkit.retry import backoff_delays


class RunDidNotComplete(Exception):
    """The run ended in a final state other than Completed."""


def trigger(
    name: str, parameters: dict[str, Any] | None = None, idempotency_key: str | None = None
) -> UUID:
    """Create a run of deployment `name` ('flow-name/deployment-name'); return its id at once."""
    from prefect.deployments import run_deployment

    run = run_deployment(
        name,
        parameters=parameters or {},
        idempotency_key=idempotency_key,
        timeout=0,
        as_subflow=False,
    )
    return run.id


def wait(run_id: UUID | str, timeout_seconds: float = 3600, max_interval: float = 10.0) -> Any:
    """Poll until the run is final; its result, or `RunDidNotComplete`, or `TimeoutError`."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_seconds
    intervals = backoff_delays(0.5, max_interval, jitter=0.0)
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(UUID(str(run_id)))
            if run.state is not None and run.state.is_final():
                if not run.state.is_completed():
                    raise RunDidNotComplete(
                        f"run {run_id} ended {run.state.name}: {run.state.message}"
                    )
                try:
                    return run.state.result()
                except Exception:  # the flow does not persist its result
                    return None
            left = deadline - time.monotonic()
            if left <= 0:
                state = run.state.name if run.state else "unknown"
                raise TimeoutError(f"run {run_id} still {state} after {timeout_seconds} s")
            time.sleep(min(next(intervals), left))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.trigger")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start a deployment run; print its id")
    run.add_argument("name", help="flow-name/deployment-name")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--key", help="idempotency key: the same key gives the same run")
    run.add_argument("--wait", action="store_true", help="wait for the run to end")
    run.add_argument("--timeout", type=float, default=3600)
    waiting = commands.add_parser("wait", help="wait for a run to end")
    waiting.add_argument("run_id")
    waiting.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)

    run_id = (
        args.run_id
        if args.command == "wait"
        else trigger(args.name, parse_parameters(args.param), args.key)
    )
    print(run_id, flush=True)
    if args.command == "run" and not args.wait:
        return 0
    try:
        result = wait(run_id, args.timeout)
    except (RunDidNotComplete, TimeoutError) as exc:
        print(exc, file=sys.stderr)
        return 1
    if result is not None:
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
