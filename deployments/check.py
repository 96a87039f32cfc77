"""`python -m deployments check`: validate prefect.yaml without a server.

Scenario: a typo in prefect.yaml (an entrypoint that moved, a parameter the flow no longer
takes, a cron with six fields, a trigger without `expect`) is found today only when
`prefect deploy` runs against a server, or worse, when the deployment first runs.

Solution: load the file, then for every deployment import its entrypoint, validate its
parameters against the flow's own signature (the same pydantic validation a run gets),
build its schedules and triggers with Prefect's own schema classes, and check its work pool
is one the project's tooling creates. Every problem is reported as
`deployment '<name>': <field>: <message>`; the exit code is 1 if there is any.

How to run:
    python -m deployments check [path/to/prefect.yaml]
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

KNOWN_WORK_POOLS = {"local-process": "process", "docker": "docker"}
"""Work pools the project's tooling creates, by name, with their type."""

SCHEDULE_KINDS = ("cron", "interval", "rrule")


def check_file(path: Path) -> list[str]:
    """Every problem in the prefect.yaml at `path`, as one line each; empty if none."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        return [f"{path}: cannot be read as YAML: {exc}"]
    if not isinstance(document, dict) or not isinstance(document.get("deployments"), list):
        return [f"{path}: no 'deployments' list"]
    problems: list[str] = []
    names = [d.get("name") for d in document["deployments"] if isinstance(d, dict)]
    for duplicate in sorted({n for n in names if names.count(n) > 1 and n}):
        problems.append(f"deployment {duplicate!r}: name: declared more than once")
    for position, deployment in enumerate(document["deployments"], start=1):
        if not isinstance(deployment, dict):
            problems.append(f"deployment #{position}: not a mapping")
            continue
        name = deployment.get("name") or f"#{position}"
        problems += [f"deployment {name!r}: {p}" for p in check_deployment(deployment, path)]
    return problems


def check_deployment(deployment: dict[str, Any], path: Path) -> list[str]:
    problems: list[str] = check_fields(deployment)
    if not deployment.get("name"):
        problems.append("name: missing")
    flow, problem = load_entrypoint(deployment.get("entrypoint"), path.parent)
    if problem:
        problems.append(problem)
    elif flow is not None:
        problems += check_parameters(flow, deployment.get("parameters") or {})
    for index, schedule in enumerate(deployment.get("schedules") or []):
        problems += [f"schedules[{index}].{p}" for p in check_schedule(schedule)]
    for index, trigger in enumerate(deployment.get("triggers") or []):
        problems += [f"triggers[{index}]: {p}" for p in check_trigger(trigger)]
    pool = (deployment.get("work_pool") or {}).get("name")
    if pool not in KNOWN_WORK_POOLS:
        problems.append(f"work_pool.name: {pool!r} is not one of {sorted(KNOWN_WORK_POOLS)}")
    return problems


def check_fields(deployment: dict[str, Any]) -> list[str]:
    """Unknown keys (Prefect ignores them silently: a typo loses a setting) and wrong types."""
    # Prefect's own model of a prefect.yaml deployment; private, so pinned with prefect.
    from prefect.cli.deploy._models import DeploymentConfig

    known = set(DeploymentConfig.model_fields)
    problems = [f"{key}: not a deployment field" for key in deployment if key not in known]
    try:
        DeploymentConfig.model_validate(deployment)
    except ValidationError as exc:
        problems += [
            _describe(error)
            for error in exc.errors()
            if str(error["loc"][0]) not in ("schedules", "triggers")  # checked on their own
        ]
    return problems


def load_entrypoint(entrypoint: Any, root: Path) -> tuple[Any, str | None]:
    """The flow at `module.path:function` (or `path/to/file.py:function`), or a problem."""
    from prefect.flows import Flow, load_flow_from_entrypoint

    if not isinstance(entrypoint, str) or ":" not in entrypoint:
        return None, f"entrypoint: {entrypoint!r} is not 'package.module:function'"
    location, _, _ = entrypoint.partition(":")
    if location.endswith(".py"):
        if not (root / location).is_file():
            return None, f"entrypoint: no file {location!r}"
        entrypoint = str(root / entrypoint)
    try:
        flow = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
    except Exception as exc:  # an import error, or the function is not there
        return None, f"entrypoint: {entrypoint!r} does not load: {type(exc).__name__}: {exc}"
    if not isinstance(flow, Flow):
        return None, f"entrypoint: {entrypoint!r} is not a flow"
    return flow, None


def check_parameters(flow: Any, parameters: dict[str, Any]) -> list[str]:
    from prefect.exceptions import ParameterTypeError, SignatureMismatchError

    try:
        flow.validate_parameters(parameters)
    except (ParameterTypeError, SignatureMismatchError) as exc:
        return [f"parameters: {exc}"]
    return []


def check_schedule(schedule: Any) -> list[str]:
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    if not isinstance(schedule, dict):
        return ["not a mapping"]
    kinds = [kind for kind in SCHEDULE_KINDS if schedule.get(kind) is not None]
    if len(kinds) != 1:
        return [f"{'/'.join(SCHEDULE_KINDS)}: exactly one is needed, found {kinds or 'none'}"]
    kind, timezone = kinds[0], schedule.get("timezone")
    try:
        if kind == "cron":
            CronSchedule(cron=schedule["cron"], timezone=timezone)
        elif kind == "interval":
            IntervalSchedule(
                interval=timedelta(seconds=float(schedule["interval"])), timezone=timezone
            )
        else:
            RRuleSchedule(rrule=schedule["rrule"], timezone=timezone)
    except (ValidationError, ValueError, TypeError) as exc:
        return [f"{kind}: {_first_line(exc)}"]
    return []


def check_trigger(trigger: Any) -> list[str]:
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes

    if not isinstance(trigger, dict):
        return ["not a mapping"]
    try:
        TypeAdapter(DeploymentTriggerTypes).validate_python({"name": "check", **trigger})
    except ValidationError as exc:
        return [_first_line(exc)]
    if trigger.get("type", "event") == "event" and not trigger.get("expect"):
        return ["expect: an event trigger needs the events it waits for"]
    return []


def _first_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return _describe(exc.errors()[0])
    return str(exc).splitlines()[0]


def _describe(error: Any) -> str:
    """`field.path: message` of one pydantic error."""
    where = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
    return f"{where}: {error['msg']}" if where else error["msg"]


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path("prefect.yaml")
    problems = check_file(path)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{path}: every deployment checks out")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
