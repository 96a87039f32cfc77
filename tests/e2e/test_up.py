"""`python -m deployments up`: the local stack comes up with every deployment, can be started
twice without harm, and Ctrl-C stops what it started."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from deployments.deploy import select
from tests.helpers.stack import ROOT, start_up, stop


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2):
            return True
    except OSError:
        return False


def deployment_names(api_url: str) -> set[str]:
    import json

    request = urllib.request.Request(
        f"{api_url}/deployments/filter", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return {d["name"] for d in json.load(response)}


def test_up_twice_then_ctrl_c(tmp_path: Path) -> None:
    first, lines = start_up(tmp_path)
    try:
        api_url = lines[-1].split()[1] + "/api"
        assert any("Starting a Prefect server" in line for line in lines)
        assert deployment_names(api_url) == {
            d["name"] for d in select(ROOT / "prefect.yaml", [], docker=False)
        }

        second, second_lines = start_up(tmp_path)  # reuses the running server
        assert not any("Starting a Prefect server" in line for line in second_lines)
        assert second_lines[-1] == lines[-1]
        assert stop(second) == 0
        assert healthy(api_url)  # the second stack did not stop what it did not start
    finally:
        code = stop(first)
    assert code == 0
    assert not healthy(api_url)
