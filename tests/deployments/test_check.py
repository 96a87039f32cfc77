"""`python -m deployments check`: passes on the real prefect.yaml, names what is broken."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deployments.check import check_file
from tests.helpers import ROOT

REAL = yaml.safe_load((ROOT / "prefect.yaml").read_text())


def problems_with(tmp_path: Path, change) -> list[str]:
    document = json.loads(json.dumps(REAL))  # unshares what YAML anchors shared
    change(document["deployments"][0])
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(document))
    for entry in ("flows", "toolkit", "blocks"):  # entrypoints resolve next to the file
        (tmp_path / entry).symlink_to(ROOT / entry)
    return check_file(path)


def test_the_real_prefect_yaml_passes() -> None:
    assert check_file(ROOT / "prefect.yaml") == []


def test_the_command_exits_non_zero_and_names_the_problem(tmp_path: Path) -> None:
    broken = tmp_path / "prefect.yaml"
    broken.write_text("deployments:\n  - name: x\n    entrypoint: nowhere.py:flow\n")
    result = subprocess.run(
        [sys.executable, "-m", "deployments", "check", str(broken)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "deployment 'x': entrypoint: no file 'nowhere.py'" in result.stderr


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(entrypoint="flows/ledger_sync.py:no_such_flow"), "entrypoint:"),
        (lambda d: d.update(entrypoint="flows/ledger_sync.py"), "entrypoint:"),
        (lambda d: d.update(entrypoint="flows.ledger_sync:no_such_flow"), "entrypoint:"),
        (lambda d: d.update(entrypoint="flows.no_such_module:flow"), "entrypoint:"),
        (lambda d: d.update(enforce_parameter_shema=True), "enforce_parameter_shema: not a"),
        (lambda d: d.update(concurrency_limit={"limit": "many"}), "concurrency_limit"),
        (lambda d: d["parameters"].update(batch_size=0), "parameters:"),
        (lambda d: d["parameters"].update(batch_size="many"), "batch_size"),
        (lambda d: d["parameters"].update(no_such_parameter=1), "no_such_parameter"),
        (lambda d: d.update(schedules=[{"cron": "0 9 * * *", "interval": 60}]), "schedules[0]"),
        (lambda d: d.update(schedules=[{"cron": "not a cron", "timezone": "UTC"}]), "cron"),
        (lambda d: d.update(schedules=[{"interval": 60, "timezone": "Mars/Base"}]), "interval"),
        (lambda d: d.update(triggers=[{"type": "event", "match": {}}]), "triggers[0]: expect"),
        (lambda d: d.update(triggers=[{"type": "no-such-type"}]), "triggers[0]"),
        (lambda d: d.update(work_pool={"name": "nobody-made-this"}), "work_pool.name"),
    ],
)
def test_a_broken_deployment_is_named_with_its_field(tmp_path: Path, change, expected) -> None:
    problems = problems_with(tmp_path, change)
    assert problems, "the broken file passed"
    assert all(p.startswith("deployment 'ledger-sync': ") for p in problems), problems
    assert any(expected in p for p in problems), problems


def test_a_duplicate_name_is_reported(tmp_path: Path) -> None:
    problems = problems_with(tmp_path, lambda d: d.update(name="reconcile-ledger"))
    assert "deployment 'reconcile-ledger': name: declared more than once" in problems
