"""Crashed runs: mark a deployment run Crashed when its heartbeats stop.

Scenario: a flow run's process is killed (SIGKILL, the OOM killer, a lost machine or
container) together with the worker that started it. Nothing is left to report the end, so
on a self-hosted server the run stays Running forever: its concurrency slot stays taken,
callers polling it wait until their own timeout, and the UI shows work that is not happening.

Solution: the proactive automation of Prefect's guide "How to detect and respond to zombie
flows", installed by `python -m deployments deploy` (and so `up`). Every deployment in
prefect.yaml runs with `PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30`, so its flow run emits a
`prefect.flow-run.heartbeat` event every 30 s while its process lives. The automation
expects, after a heartbeat of a run, any further event of that run (another heartbeat or a
state change) within 90 s, one bucket per run; when none comes, it changes the run's state
to Crashed with a message that says why: 60-90 s after the process died, plus a few seconds
(the server checks proactive automations every 5 s). Only runs tagged `resilient-flows` are
watched (every deployment here has the tag and heartbeats every 30 s), so other flows on a
shared server, with Prefect's default 180 s, are left alone. What happens to a Crashed run
next, run again or ended Failed, is flows/rerun_crashed.py's decision, started by the crash
(a trigger in prefect.yaml) for deployments tagged `rerun-on-crash`.

Races Prefect reports, and why they do no harm here: a run that completes as a late
heartbeat lands (#18653, #20887) is asked to become Crashed, but the change is not forced, and
Prefect's orchestration refuses to leave a final state for Crashed: the run stays Completed
and is not re-run. A live run wrongly crashed (heartbeats delayed, #16459) and re-run would
run twice: a ledger sync holds its ledger's lock and posts under Idempotency-Keys, so the
second waits, then finds nothing left to do. The automation not firing at all (#18404)
leaves a run Running, as without it: the tests measure detection end to end.

How to run (with PREFECT_API_URL pointing at the server):
    python -m deployments.crash_detection           # install or update; prints what it did
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.events.schemas.automations import AutomationCore

AUTOMATION_NAME = "resilient-flows: crash zombie flow runs"

TAG = "resilient-flows"
"""The tag every deployment in prefect.yaml carries, and so every run of one."""

HEARTBEAT_SECONDS = 30
"""`PREFECT_FLOWS_HEARTBEAT_FREQUENCY` of every deployment in prefect.yaml."""

WITHIN = timedelta(seconds=3 * HEARTBEAT_SECONDS)
"""Silence after a heartbeat that makes a run a zombie.

Three heartbeat periods, as Prefect's guide: two consecutive heartbeats may be lost or late
(a websocket reconnect, a starved 2-core machine, an event buffered behind a slow flush)
without crashing a live run, and a dead one is still marked Crashed within two minutes.
"""

RETIRED_AUTOMATIONS = ("resilient-flows: re-run crashed flow runs",)
"""Automations earlier versions installed, deleted on install: re-running is now
flows/rerun_crashed.py's, which counts attempts whether or not the flow ever started."""

CRASH_MESSAGE = (
    f"No heartbeat for {WITHIN.total_seconds():.0f} s: the flow run's process or machine "
    f"died (automation {AUTOMATION_NAME!r})."
)


def crash_detection_automation() -> AutomationCore:
    """The automation's definition, as this project wants it on the server."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=AUTOMATION_NAME,
        description=(
            f"Marks a flow run tagged {TAG!r} Crashed when it sends no event for "
            f"{WITHIN.total_seconds():.0f} s after a heartbeat (heartbeats every "
            f"{HEARTBEAT_SECONDS} s). Installed by `python -m deployments deploy`."
        ),
        enabled=True,
        # The empty lists are set explicitly: an update sends only the fields that were set,
        # and must reset these too.
        tags=[],
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            # Any flow-run event is a sign of life or an end: the wildcard also covers final
            # states with custom names (the approval flow's Cancelled "Rejected") and a run
            # that suspends and exits, which the guide's list of four terminal states misses.
            expect={"prefect.flow-run.*"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            # Only this project's deployment runs (they carry its tag): Prefect 3.9 sends a
            # heartbeat from every flow run, every 180 s by default, so a healthy run started
            # from a script (`make demo`, the tests), or another team's deployment on a shared
            # server, would be crashed after 90 s; ours heartbeat every 30 s (prefect.yaml).
            match_related=ResourceSpecification(
                {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{TAG}"}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=WITHIN,
        ),
        # Not forced: orchestration then keeps a run that reached a final state meanwhile.
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=CRASH_MESSAGE)],
        actions_on_trigger=[],
        actions_on_resolve=[],
    )


def crash_automations() -> list[AutomationCore]:
    """The automations this project installs."""
    return [crash_detection_automation()]


def install_crash_automations() -> list[str]:
    """Install or update the automations, delete retired ones; the names of those changed."""
    from prefect.client.orchestration import get_client

    changed = [wanted.name for wanted in crash_automations() if install_automation(wanted)]
    with get_client(sync_client=True) as client:
        for name in RETIRED_AUTOMATIONS:
            for retired in client.read_automations_by_name(name):
                client.delete_automation(retired.id)
                changed.append(name)
    return changed


def install_automation(wanted: AutomationCore) -> bool:
    """Create or update `wanted` on the server in PREFECT_API_URL, by name; True if changed.

    Duplicates of the name (two deploys racing) are deleted, so exactly one remains.
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(wanted.name)
        if not existing:
            client.create_automation(wanted)
            return True
        keep, *duplicates = sorted(existing, key=lambda a: str(a.id))
        for duplicate in duplicates:
            client.delete_automation(duplicate.id)
        if _comparable(keep) == _comparable(wanted):
            return bool(duplicates)
        client.update_automation(keep.id, wanted)
        return True


def _comparable(automation: AutomationCore) -> dict[str, Any]:
    """The definition without what the server assigns (ids, ownership)."""
    from prefect.events.schemas.automations import AutomationCore

    dumped = AutomationCore.model_validate(automation.model_dump()).model_dump(
        exclude={"owner_resource"}
    )
    dumped["trigger"].pop("id", None)
    return dumped


def main(argv: list[str]) -> int:
    if argv:
        print("usage: python -m deployments.crash_detection", file=sys.stderr)
        return 2
    changed = install_crash_automations()
    for automation in crash_automations():
        done = "installed" if automation.name in changed else "already up to date"
        print(f"automation {automation.name!r} {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
