"""Re-run a crashed run, a bounded number of times, and never one that cannot start.

Scenario
    A ledger sync's process or machine dies mid-run; nobody is awake to press Retry, and the
    sync goes on from its checkpoints, so it should simply run again. But a run that dies on
    every start (a poison input, not enough memory) must not be started for ever, and a run
    that fails before its flow starts (a misspelled parameter, an entrypoint that no longer
    imports, a missing package) fails the same way every time: it should end Failed at once,
    saying why. Prefect counts a run's starts only once its flow is Running, so a run that
    never gets there has started "0 times" however often a worker took it.

Solution
    Every Crashed run of a deployment tagged `rerun-on-crash` starts this flow (its trigger
    in prefect.yaml, the event's run as the parameter). It reads the crashed run's state
    history, where each attempt is a worker's claim (Scheduled, then Pending) whether or not
    the flow body ran, and decides (`decide`, a pure function): a run whose last attempt
    never reached Running is set Failed with the error its logs show; a run that has had
    `MOST_ATTEMPTS` attempts is set Failed too; otherwise it is set back to Scheduled
    (`AwaitingRetry`, as the UI's Retry button does), so a live worker of its pool runs it
    again, same id, parameters and checkpoints. A run no longer Crashed (another decision
    came first, a person acted) is left as it is.

How to run
    Deployed by `python -m deployments deploy` (the `rerun-crashed` deployment); by hand:
    python -m flows.rerun_crashed flow_run_id=<id of a crashed run>
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger

from toolkit.cli import parse_parameters

MOST_ATTEMPTS = 4
"""Attempts (a worker's claims) after which a crashed run stays down. Flow retries are
attempts too: a sync that used its flow retries and then crashed is run again only while
it has had fewer than this many."""

RERUN_TAG = "rerun-on-crash"
"""The tag of deployments whose crashed runs this flow handles (its trigger, prefect.yaml)."""
RERUN_MESSAGE = "Run again after a crash (flow rerun-crashed)."
RUN_RESOURCE = "prefect.flow-run."


@dataclass(frozen=True)
class Seen:
    """One state of a run's history: its type (`SCHEDULED`, `PENDING`, ...) and message."""

    type: str
    message: str | None = None


@dataclass(frozen=True)
class Decision:
    rerun: bool
    message: str


def attempts(history: list[Seen]) -> int:
    """A worker's claims of the run: each Pending straight after a Scheduled."""
    pairs = itertools.pairwise(history)
    return sum(1 for a, b in pairs if a.type == "SCHEDULED" and b.type == "PENDING")


def decide(history: list[Seen], why: str | None, most_attempts: int = MOST_ATTEMPTS) -> Decision:
    """Run the crashed run again, or not, from its state history (oldest first, ending with
    the crash) and `why`, the error its last attempt logged (None if it logged none)."""
    since_claim = history[_last_claim(history) :]
    reason = why or (history[-1].message if history else None) or "no error was logged"
    if not any(seen.type == "RUNNING" for seen in since_claim):
        return Decision(False, f"Failed before its flow started, not run again: {reason}")
    tried = attempts(history)
    if tried >= most_attempts:
        return Decision(False, f"Crashed on each of {tried} attempts, not run again: {reason}")
    return Decision(True, RERUN_MESSAGE)


def _last_claim(history: list[Seen]) -> int:
    claims = [i for i, seen in enumerate(history) if seen.type == "SCHEDULED"]
    return claims[-1] if claims else 0


def run_id_of(text: str) -> str:
    """A run's id from an event's resource id (`prefect.flow-run.<id>`) or the id itself."""
    return text.removeprefix(RUN_RESOURCE)


@flow(name="rerun-crashed", persist_result=False)
def rerun_crashed(flow_run_id: str = "") -> str:
    """Run a crashed run again, or end it Failed saying why; what was done, in a sentence.

    Args:
      flow_run_id: The crashed run's id (or its event resource id, `prefect.flow-run.<id>`);
        the trigger passes the crashed run's.
    """
    from prefect.client.orchestration import get_client
    from prefect.states import AwaitingRetry, Failed

    if not flow_run_id:
        raise ValueError("flow_run_id: the id of the crashed run is needed")
    logger, run_id = get_run_logger(), run_id_of(flow_run_id)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        if run.state is None or not run.state.is_crashed():
            logger.info("Run %s is %s, not Crashed: left as it is", run.name, run.state)
            return f"left {run.name} as it is"
        states = sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
        history = [Seen(state.type.value, state.message) for state in states]
        decision = decide(history, _last_error(client, run_id))
        if decision.rerun:
            client.set_flow_run_state(run_id, AwaitingRetry(message=decision.message))
        else:
            client.set_flow_run_state(run_id, Failed(message=decision.message), force=True)
    logger.info("Run %s: %s", run.name, decision.message)
    return f"{run.name}: {decision.message}"


def _last_error(client: Any, run_id: str) -> str | None:
    """The last line of the last error its process logged (Prefect logs it before exiting)."""
    from prefect.client.schemas.filters import (
        LogFilter,
        LogFilterFlowRunId,
        LogFilterLevel,
    )
    from prefect.client.schemas.sorting import LogSort

    errors = client.read_logs(
        log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[run_id]), level=LogFilterLevel(ge_=40)
        ),
        sort=LogSort.TIMESTAMP_DESC,
        limit=1,
    )
    lines = [line for line in errors[0].message.splitlines() if line.strip()] if errors else []
    return lines[-1].strip() if lines else None


def main(argv: list[str]) -> int:
    """`python -m flows.rerun_crashed flow_run_id=<id>`."""
    print(rerun_crashed(**parse_parameters(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
