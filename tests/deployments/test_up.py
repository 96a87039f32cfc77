"""deployments/up.py: the table `make up` prints of what it started.

From the project's own prefect.yaml; the stack itself is started in tests/e2e/test_up.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.deploy import select
from deployments.up import deployment_rows, print_table, process_rows, shown, starts
from tests.helpers import ROOT

SERVICES = ["records", "rates", "rates_fallback", "ledger"]


def deployed() -> list[dict]:
    return select(ROOT / "prefect.yaml", [], docker=False)


@pytest.mark.parametrize(
    ("deployment", "expected"),
    [
        (
            {"schedules": [{"cron": "0 2 * * *", "timezone": "Europe/Berlin"}]},
            "cron 0 2 * * * (Europe/Berlin)",
        ),
        ({"schedules": [{"interval": 3600, "timezone": "UTC"}]}, "every 3600 s (UTC)"),
        ({"schedules": [{"rrule": "FREQ=DAILY"}]}, "rrule FREQ=DAILY"),
        ({"triggers": [{"type": "event", "expect": ["a.b.completed"]}]}, "on event a.b.completed"),
        ({"schedules": [], "triggers": []}, "on demand"),
        ({}, "on demand"),
    ],
)
def test_what_starts_a_deployment(deployment: dict, expected: str) -> None:
    assert starts(deployment) == expected


def test_both_a_schedule_and_a_trigger_are_named() -> None:
    deployment = {
        "schedules": [{"cron": "0 2 * * *"}],
        "triggers": [{"expect": ["x.done", "y.done"]}],
    }
    assert starts(deployment) == "cron 0 2 * * *; on event x.done, y.done"


def test_a_row_per_deployment_named_as_run_takes_it() -> None:
    rows = {row[0]: row for row in deployment_rows(deployed()) if row}

    assert len(rows) == len(deployed())
    assert rows["ledger-sync/ledger-sync"][1:] == (
        "pool local-process",
        "cron 0 2 * * * (Europe/Berlin)",
    )
    assert rows["reconcile-ledger/reconcile-ledger"][2] == (
        "on event resilient-flows.ledger-sync.completed"
    )
    assert rows["fire-and-forget/fire-and-forget"][2] == "on demand"


def test_the_table_has_every_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    urls = {s: f"http://127.0.0.1:{port}" for port, s in enumerate(SERVICES, start=9001)}
    rows = [
        *deployment_rows(deployed()),
        None,
        *process_rows(tmp_path, urls, "http://127.0.0.1:9100/callbacks"),
    ]
    print_table(rows)

    table = capsys.readouterr().out
    for deployment in deployed():
        assert f"{deployment['name']}/{deployment['name']}" in table  # flows named as them
    assert f"log {tmp_path / 'worker.log'}" in table
    assert "http://127.0.0.1:9004" in table and "block sandbox-ledger" in table
    assert max(len(line) for line in table.splitlines()) <= 160


def test_paths_under_the_current_directory_are_shown_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert shown(tmp_path / ".prefect-home" / "worker.log") == ".prefect-home/worker.log"
    assert shown(Path("/elsewhere/worker.log")) == "/elsewhere/worker.log"
