"""`python -m deployments up --profile scale` as a user runs it: its table, then Ctrl-C stops
every part it started (balancer, replicas, object store, workers), exit code 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from deployments.scale import ensure_database
from tests.helpers import ROOT, services
from tests.helpers.stack import answers
from tests.scale.helpers import scale_settings


def row_url(lines: list[str], label: str) -> str:
    """The first URL on the table's row labelled `label`."""
    row = next(line for line in lines if label in line)
    return re.findall(r"http://127\.0\.0\.1:\d+(?:/api)?", row)[0]


@pytest.mark.timeout(600)
def test_up_scale_prints_what_runs_where_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    with services.postgres_server() as postgres:
        run_up_scale(
            tmp_path, scale_settings(postgres.url, os.environ["RESILIENT_FLOWS_REDIS_URL"])
        )


def run_up_scale(tmp_path: Path, session: dict[str, str]) -> None:
    database = session["PREFECT_API_DATABASE_CONNECTION_URL"].replace("_scale", "_up_scale")
    ledger = session["RESILIENT_FLOWS_LEDGER_INDEX_URL"].replace("_scale", "_up_scale")
    messaging_db = max(int(session["PREFECT_REDIS_MESSAGING_DB"]) - 1, 0)  # not the fixture's
    for url in (database, ledger):
        ensure_database(url, fresh=True)
    redis.Redis(
        host=session["PREFECT_REDIS_MESSAGING_HOST"],
        port=int(session["PREFECT_REDIS_MESSAGING_PORT"]),
        db=messaging_db,
    ).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            **session,
            "PREFECT_API_DATABASE_CONNECTION_URL": database,
            "RESILIENT_FLOWS_LEDGER_INDEX_URL": ledger,
            "PREFECT_REDIS_MESSAGING_DB": str(messaging_db),
            "PWD": str(ROOT),
        }
    )
    command = [sys.executable, "-m", "deployments", "up", "--profile", "scale"]
    command += ["--home", str(tmp_path), "--records", "200"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (lines and lines[-1].startswith("UI: ")):
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            lines.append(line)
        output = "".join(lines)
        assert lines and lines[-1].startswith("UI: "), output[-3000:]
        for part in (
            "load balancer (HAProxy)",
            "API replica 0",
            "API replica 1",
            "background services",
            "worker-2",
            "task-worker-0",
            "object store (moto)",
            "ledger-sync/ledger-sync",
        ):
            assert part in output, part
        labels = ("load balancer", "API replica 0", "API replica 1")
        apis = [row_url(lines, label) for label in labels]
        assert len(set(apis)) == 3 and all(answers(f"{url}/health") for url in apis)
        store = row_url(lines, "object store (moto)")
        assert answers(store)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=120)
    assert code == 0, "".join(lines[-40:])
    assert not any(answers(f"{url}/health") for url in apis)
    assert not answers(store)
    for log in ("worker-0.log", "worker-1.log", "worker-2.log", "task-worker-0.log"):
        assert (tmp_path / log).exists()
