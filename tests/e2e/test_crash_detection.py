"""Crashed-run detection, end to end, on a real `prefect server start` of this module's own.

Proves that `python -m deployments deploy` installs the zombie-detection automation (once, however
often it runs), and that a deployment run whose worker and flow-run process are both SIGKILLed,
as on a lost machine, is marked Crashed by that automation (its message, not the worker's)
within 150 s of the kill. The worker must die too: a live process worker would report the
crash itself and prove nothing about the automation.

The server is this module's own, not the session's: the `local-process` pool's runs cannot be
taken by another module's worker, and the killed run and its automation stay out of the
session server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest

from deployments.crash_detection import (
    AUTOMATION_NAME,
    CRASH_MESSAGE,
    HEARTBEAT_SECONDS,
    TAG,
    WITHIN,
    crash_detection_automation,
    install_crash_detection,
)
from tests.helpers import ROOT
from tests.helpers.polling import poll_until
from tests.helpers.stack import deploy

PREFECT = str(Path(sys.executable).with_name("prefect"))
KILL_TO_CRASHED_SECONDS = 150


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


def automations() -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_automations_by_name(AUTOMATION_NAME)


def test_every_deployment_is_watched_and_heartbeats_often_enough() -> None:
    import yaml

    for deployment in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]:
        env = deployment["work_pool"]["job_variables"]["env"]
        assert TAG in deployment["tags"], deployment["name"]
        assert int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]) <= HEARTBEAT_SECONDS


def test_deploy_installs_the_automation(deployed: str) -> None:
    installed = automations()

    assert f"installed automation {AUTOMATION_NAME!r}" in deployed
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

    assert install_crash_detection() is True
    assert install_crash_detection() is False
    assert len(automations()) == 1

    # A changed definition (an older release's, a hand edit) is put back, and a duplicate
    # (two deploys racing) removed.
    edited = crash_detection_automation()
    edited.trigger.within = timedelta(seconds=20)
    with get_client(sync_client=True) as client:
        client.update_automation(automations()[0].id, edited)
        client.create_automation(crash_detection_automation())

    assert install_crash_detection() is True
    assert install_crash_detection() is False
    assert [a.trigger.within for a in automations()] == [WITHIN]


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (from /proc: the flow-run process has its own session)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def heartbeats(run_id: UUID) -> list:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(
                event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
            ),
            limit=50,  # the client's default, 100, is above the server's maximum
        )
    return page.events


def read_run(run_id: UUID):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


@pytest.mark.timeout(420)
def test_a_run_whose_machine_died_is_marked_crashed(
    deployed: str, env: dict[str, str], tmp_path: Path
) -> None:
    from deployments.trigger import trigger

    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "local-process"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        run_id = trigger("fire-and-forget/fire-and-forget", {"seconds": 600})
        poll_until(lambda: read_run(run_id).state.is_running(), 120, 1, "a Running run")
        poll_until(lambda: heartbeats(run_id), 60, 1, "a heartbeat")
        processes = [worker.pid, *descendants(worker.pid)]
        assert len(processes) > 1, "no flow-run process under the worker"

        for pid in processes:  # the whole machine: worker, flow-run process, their groups
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        worker.wait(timeout=10)
        poll_until(lambda: not any(alive(pid) for pid in processes), 10, 1, "the processes' end")
        assert read_run(run_id).state.is_running()

        run = poll_until(
            lambda: (run := read_run(run_id)).state.is_final() and run,
            KILL_TO_CRASHED_SECONDS,
            1,
            "a final state",
        )
        took = time.monotonic() - killed
        last_heartbeat = max(event.occurred for event in heartbeats(run_id))
        print(
            f"kill to {run.state.type.value}: {took:.0f} s; last heartbeat to it: "
            f"{(run.state.timestamp - last_heartbeat).total_seconds():.0f} s"
        )
        assert run.state.type.value == "CRASHED", run.state
        assert run.state.message == CRASH_MESSAGE
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
