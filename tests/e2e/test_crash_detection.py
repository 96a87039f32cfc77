"""Crashed runs, end to end, on a real `prefect server start` of this module's own.

Proves that `python -m deployments deploy` installs both automations (once, however often it
runs), and that a Crashed run tagged `rerun-on-crash` is scheduled again, until it has started
`MOST_STARTS` times, while an untagged one stays Crashed and a Completed run is never made
Crashed. A real lost machine (worker and flow-run processes SIGKILLed: a live process worker
would report the crash itself and prove nothing about the automation), found by the detection
within 150 s of the kill and re-run through to an exact ledger, is
tests/scale/test_lost_worker.py: waiting out the heartbeats' silence takes about 100 s, which
`make test` leaves to `make test-scale`.

The server is this module's own, not the session's: the `local-process` pool's runs cannot be
taken by another module's worker, and the killed run and its automation stay out of the
session server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta
from uuid import UUID

import pytest

from deployments.crash_detection import (
    AUTOMATION_NAME,
    CRASH_MESSAGE,
    HEARTBEAT_SECONDS,
    MOST_STARTS,
    RERUN_AUTOMATION_NAME,
    RERUN_MESSAGE,
    RERUN_TAG,
    TAG,
    WITHIN,
    crash_automations,
    crash_detection_automation,
    install_automation,
    install_crash_automations,
    rerun_run_counts,
)
from tests.helpers import ROOT
from tests.helpers.polling import poll_until
from tests.helpers.stack import deploy


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API URL of a Prefect server of this module's own; the in-process client uses it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.stack import start_server

    started = start_server(tmp_path_factory.mktemp("crash-detection-home"))
    try:
        with temporary_settings({PREFECT_API_URL: started.api_url}):
            yield started.api_url
    finally:
        started.stop()


@pytest.fixture(scope="module")
def env(server: str) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": server,
        "PWD": str(ROOT),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }


@pytest.fixture(scope="module")
def deployed(env: dict[str, str]) -> str:
    """`deployments deploy fire-and-forget`; its standard output."""
    return deploy(env, "fire-and-forget")


def automations(name: str = AUTOMATION_NAME) -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_automations_by_name(name)


def test_every_deployment_is_watched_and_heartbeats_often_enough() -> None:
    import yaml

    for deployment in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]:
        env = deployment["work_pool"]["job_variables"]["env"]
        assert TAG in deployment["tags"], deployment["name"]
        assert int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]) <= HEARTBEAT_SECONDS


def test_only_runs_below_most_starts_run_again() -> None:
    assert rerun_run_counts(MOST_STARTS) == {"0", "1", "2", "3"}
    assert rerun_run_counts(1) == {"0"}  # only a run that never started
    assert rerun_run_counts(0) == set()


def test_deploy_installs_both_automations(deployed: str) -> None:
    for name in (AUTOMATION_NAME, RERUN_AUTOMATION_NAME):
        assert f"installed automation {name!r}" in deployed
        assert [a.enabled for a in automations(name)] == [True]
    rerun = automations(RERUN_AUTOMATION_NAME)[0]
    assert rerun.trigger.posture == "Reactive"
    assert rerun.trigger.expect == {"prefect.flow-run.Crashed"}
    assert (rerun.actions[0].state, rerun.actions[0].force) == ("SCHEDULED", False)

    installed = automations()
    assert len(installed) == 1 and installed[0].enabled
    trigger = installed[0].trigger
    assert trigger.posture == "Proactive" and trigger.within == WITHIN
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.for_each == {"prefect.resource.id"}
    assert installed[0].actions[0].state == "CRASHED"


def test_installing_twice_keeps_one_automation(server: str) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for automation in client.read_automations_by_name(AUTOMATION_NAME):
            client.delete_automation(automation.id)

    assert install_crash_automations() == [AUTOMATION_NAME]
    assert install_crash_automations() == []
    assert len(automations()) == 1

    # A changed definition (an older release's, a hand edit) is put back, and a duplicate
    # (two deploys racing) removed.
    edited = crash_detection_automation()
    edited.trigger.within = timedelta(seconds=20)
    with get_client(sync_client=True) as client:
        client.update_automation(automations()[0].id, edited)
        client.create_automation(crash_detection_automation())

    assert install_automation(crash_detection_automation()) is True
    assert install_automation(crash_detection_automation()) is False
    assert [a.trigger.within for a in automations()] == [WITHIN]
    assert all(install_automation(wanted) is False for wanted in crash_automations())


def read_run(run_id: UUID):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def new_run(server: str, *tags: str) -> UUID:
    """A run of the fire-and-forget deployment with `tags`, that no worker takes (none runs)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("fire-and-forget/fire-and-forget")
        return client.create_flow_run_from_deployment(deployment.id, tags=list(tags)).id


def propose(run_id: UUID, state, force: bool = False) -> str:
    """What the server says to a state proposal, as a worker or the automation would send it."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.set_flow_run_state(run_id, state, force=force).status.value


def start_then_crash(run_id: UUID) -> None:
    """Pending, Running (the server counts the start), then Crashed, as a worker reports it."""
    from prefect.states import Crashed, Pending, Running

    for state in (Pending(), Running(), Crashed(message="the process died")):
        assert propose(run_id, state) == "ACCEPT", state


@pytest.mark.timeout(300)
def test_a_crashed_tagged_run_runs_again_until_it_started_most_starts_times(
    deployed: str, server: str
) -> None:
    run_id = new_run(server, TAG, RERUN_TAG)

    for starts in range(1, MOST_STARTS + 1):
        start_then_crash(run_id)
        if starts < MOST_STARTS:
            run = poll_until(
                lambda: (run := read_run(run_id)).state.is_scheduled() and run,
                60,
                0.5,
                f"the re-run after start {starts}",
            )
            assert (run.state.name, run.state.message) == ("AwaitingRetry", RERUN_MESSAGE)
            assert run.run_count == starts

    time.sleep(10)  # the automation reacts within a second or two to a Crashed event
    run = read_run(run_id)
    assert (run.state.type.value, run.run_count) == ("CRASHED", MOST_STARTS)


@pytest.mark.timeout(120)
def test_an_untagged_crashed_run_and_a_completed_run_stay_as_they_are(
    deployed: str, server: str
) -> None:
    from prefect.states import Completed, Crashed, Pending, Running

    untagged = new_run(server, TAG)
    start_then_crash(untagged)
    finished = new_run(server, TAG, RERUN_TAG)
    for state in (Pending(), Running(), Completed()):
        assert propose(finished, state) == "ACCEPT"
    # What the detection sends when a late heartbeat of a finished run times out (#18653):
    # not forced, so refused.
    assert propose(finished, Crashed(message=CRASH_MESSAGE)) == "ABORT"

    time.sleep(10)
    assert read_run(untagged).state.type.value == "CRASHED"
    assert read_run(finished).state.type.value == "COMPLETED"
