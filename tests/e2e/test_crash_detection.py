"""Crash detection, end to end, on a real `prefect server start` of this module's own.

Proves that `python -m deployments deploy` installs the detection automation (once, however
often it runs) and retires the re-run automation of earlier releases, and that a Completed run
is never made Crashed. What happens to a Crashed run next is tests/flows/test_rerun_crashed.py.
A real lost machine (worker and flow-run processes SIGKILLed: a live process worker would
report the crash itself and prove nothing about the automation), found by the detection within
150 s of the kill and re-run through to an exact ledger, is tests/scale/test_lost_worker.py:
waiting out the heartbeats' silence takes about 100 s, which `make test` leaves to
`make test-scale`.

The server is this module's own, not the session's: the automations it installs and the
runs it crashes stay out of the session server.
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
    RETIRED_AUTOMATIONS,
    TAG,
    WITHIN,
    crash_automations,
    crash_detection_automation,
    install_automation,
    install_crash_automations,
)
from tests.helpers import ROOT
from tests.helpers.stack import deploy, own_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with own_server(tmp_path_factory.mktemp("crash-detection-home")) as api_url:
        yield api_url


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


def test_deploy_installs_the_detection(deployed: str) -> None:
    assert f"installed automation {AUTOMATION_NAME!r}" in deployed
    installed = automations()
    assert len(installed) == 1 and installed[0].enabled
    trigger = installed[0].trigger
    assert trigger.posture == "Proactive" and trigger.within == WITHIN
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.for_each == {"prefect.resource.id"}
    assert installed[0].actions[0].state == "CRASHED"


def test_installing_retires_the_re_run_automation_of_earlier_releases(deployed: str) -> None:
    """It re-ran by run count, which a run that never starts never raises: for ever."""
    from prefect.client.orchestration import get_client

    retired = crash_detection_automation()
    retired.name = RETIRED_AUTOMATIONS[0]
    with get_client(sync_client=True) as client:
        client.create_automation(retired)

    assert install_crash_automations() == [RETIRED_AUTOMATIONS[0]]
    assert automations(RETIRED_AUTOMATIONS[0]) == []


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


@pytest.mark.timeout(120)
def test_a_completed_run_stays_completed(deployed: str, server: str) -> None:
    from prefect.states import Completed, Crashed, Pending, Running

    finished = new_run(server, TAG)
    for state in (Pending(), Running(), Completed()):
        assert propose(finished, state) == "ACCEPT"
    # What the detection sends when a late heartbeat of a finished run times out (#18653):
    # not forced, so refused.
    assert propose(finished, Crashed(message=CRASH_MESSAGE)) == "ABORT"

    time.sleep(10)
    assert read_run(finished).state.type.value == "COMPLETED"
