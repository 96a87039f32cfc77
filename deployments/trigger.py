"""Start a deployment and come back for its result: an API and a CLI.

Scenario: a caller must start work without waiting for it, must not start it twice when its
own request is retried, and later wants the result, or an error that says what went wrong,
within a time it chooses.

Solution:
- `trigger(name, parameters, idempotency_key)` creates a flow run of the deployment with
  Prefect's idempotency key (a key already used for that deployment returns the existing
  run) and returns the run id at once;
- `poll(run_id, timeout_seconds)` reads the run with exponential backoff (0.5 s doubling to
  10 s) until it is final or the time is up, and `wait` turns that into an answer: a
  completed run gives its result (if the flow persists it), any other final state raises
  `RunDidNotComplete` with the state's name and message, the overall timeout `TimeoutError`;
- the CLI prints the run id on stdout at once (and, once the run is over, its result), and
  with `--wait` its link on stderr, then how it ended: the final state and the link to the
  run in the UI (`closing`); the exit code is 1 unless the run completed.

How to run (with PREFECT_API_URL pointing at the server):
    python -m deployments.trigger run fire-and-forget/fire-and-forget --key order-42 \\
        --param seconds=5 [--wait] [--timeout 60]
    python -m deployments.trigger wait <run-id> [--timeout 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

from toolkit.cli import parse_parameters

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.states import State


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


def poll(run_id: UUID | str, timeout_seconds: float = 3600, max_interval: float = 10.0) -> FlowRun:
    """The run once its state is final, or as it was when `timeout_seconds` had passed."""
    from prefect.client.orchestration import get_client

    from toolkit.retry import backoff_delays

    deadline = time.monotonic() + timeout_seconds
    intervals = backoff_delays(0.5, max_interval, jitter=0.0)
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(UUID(str(run_id)))
            left = deadline - time.monotonic()
            if (run.state is not None and run.state.is_final()) or left <= 0:
                return run
            time.sleep(min(next(intervals), left))


def wait(run_id: UUID | str, timeout_seconds: float = 3600, max_interval: float = 10.0) -> Any:
    """Poll until the run is final; its result, or `RunDidNotComplete`, or `TimeoutError`."""
    state = poll(run_id, timeout_seconds, max_interval).state
    if state is None or not state.is_final():
        name = state.name if state else "unknown"
        raise TimeoutError(f"run {run_id} still {name} after {timeout_seconds} s")
    if not state.is_completed():
        raise RunDidNotComplete(f"run {run_id} ended {state.name}: {state.message}")
    return result_of(state)


def result_of(state: State) -> Any:
    """A completed run's result; None if the flow does not persist it."""
    try:
        return state.result()
    except Exception:  # no persisted result to read
        return None


def closing(state: State | None, link: str | None, timeout_seconds: float) -> tuple[int, str]:
    """The exit code of `run --wait` and its last lines: how the run ended (the final state,
    with its message), or that it is still going; then its link in the UI."""
    where = link or "(this server has no UI)"
    if state is None or not state.is_final():
        name = state.name if state else "unknown"
        return 1, f"still {name} after {timeout_seconds:g} s (it goes on): {where}"
    ended = f"{state.name}: {state.message}" if state.message else state.name
    return (0 if state.is_completed() else 1), f"{ended}\n{where}"


def main(argv: list[str]) -> int:
    from toolkit.terminal import run_link

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
    print(run_id, flush=True)  # stdout: the id, for scripts
    if args.command == "run" and not args.wait:
        return 0
    link = run_link(run_id)
    print(f"Waiting up to {args.timeout:g} s: {link or run_id}", file=sys.stderr, flush=True)
    state = poll(run_id, args.timeout).state
    if state is not None and state.is_completed() and (result := result_of(state)) is not None:
        print(result, flush=True)  # stdout: the result, for scripts
    code, words = closing(state, link, args.timeout)
    print(words, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
