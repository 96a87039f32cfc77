"""`python -m deployments up`: the local stack comes up with every deployment, can be started
twice without harm, and Ctrl-C stops what it started."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from deployments.crash_detection import AUTOMATION_NAME
from deployments.deploy import select
from tests.helpers.stack import ROOT, answers, start_up, stop


def post(url: str) -> list[dict]:
    """POST an empty filter; the decoded answer."""
    request = urllib.request.Request(url, data=b"{}", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def deployment_names(api_url: str) -> set[str]:
    return {d["name"] for d in post(f"{api_url}/deployments/filter")}


def test_up_twice_then_ctrl_c(tmp_path: Path) -> None:
    first, lines = start_up(tmp_path)
    try:
        api_url = lines[-1].split()[1] + "/api"
        assert any("Starting a Prefect server" in line for line in lines)
        deployed = select(ROOT / "prefect.yaml", [], docker=False)
        assert deployment_names(api_url) == {d["name"] for d in deployed}
        # One table of what it started; Prefect's deploy panels are in the log, not here.
        output = "".join(lines)
        for deployment in deployed:
            assert f"{deployment['name']}/{deployment['name']}" in output  # as `run` takes it
        for started in ("process worker", "task worker", "sandbox records", api_url):
            assert started in output
        assert "prefect worker start" not in output and "successfully created" not in output
        log = (tmp_path / "deploy.log").read_text()
        assert log.count("successfully created") == len(deployed)
        assert len(lines) < 60, output  # Prefect's panels alone were about 350 lines
        # Its own API calls reached the stack's server, not a temporary one of Prefect's.
        assert "temporary server" not in output
        assert AUTOMATION_NAME in {a["name"] for a in post(f"{api_url}/automations/filter")}

        second, second_lines = start_up(tmp_path)  # reuses the running server
        assert not any("Starting a Prefect server" in line for line in second_lines)
        assert second_lines[-1] == lines[-1]
        assert stop(second) == 0
        assert answers(f"{api_url}/health")  # the second stack did not stop what it did not start
    finally:
        code = stop(first)
    assert code == 0
    assert not answers(f"{api_url}/health")
