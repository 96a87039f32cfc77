"""Server auth: the local stack started with `PREFECT_SERVER_API_AUTH_STRING` refuses an
unauthenticated API call, while its workers and the project's CLI authenticate (a deployment
run triggered through the CLI completes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.helpers import ROOT
from tests.helpers.stack import drain, start_up, stop

AUTH = "admin:e2e-not-a-real-secret"


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, lines = start_up(
        tmp_path_factory.mktemp("auth-stack"), {"PREFECT_SERVER_API_AUTH_STRING": AUTH}
    )
    output = drain(process)
    ui = lines[-1].split()[1]
    yield f"{ui}/api"
    assert stop(process) == 0, "".join(output)


def post(url: str, authorization: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if authorization:
        import base64

        headers["Authorization"] = "Basic " + base64.b64encode(authorization.encode()).decode()
    request = urllib.request.Request(url, data=b"{}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status if json.load(response) else 0
    except urllib.error.HTTPError as error:
        return error.code


def cli(api_url: str, *args: str, auth: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_API_URL"] = api_url
    if auth:
        env["PREFECT_API_AUTH_STRING"] = auth
    return subprocess.run(
        [sys.executable, "-m", "deployments", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_an_unauthenticated_api_call_is_refused(api_url: str) -> None:
    assert post(f"{api_url}/deployments/filter", None) == 401
    assert post(f"{api_url}/deployments/filter", "admin:wrong") == 401
    assert post(f"{api_url}/deployments/filter", AUTH) == 200  # and the stack deployed them


def test_the_cli_and_the_worker_authenticate(api_url: str) -> None:
    run = ("run", "fire-and-forget/fire-and-forget", "--param", "seconds=0.1", "--wait")

    refused = cli(api_url, *run, "--timeout", "30", auth=None)
    accepted = cli(api_url, *run, "--timeout", "120", auth=AUTH)

    assert refused.returncode != 0 and "401" in refused.stderr + refused.stdout
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert accepted.stdout.strip().splitlines()[-1] == "done after 0.1 s"
