"""Pieces of a local stack: a Prefect server process and the project's block documents, and
fleets of sandboxes with block documents of their own (the scale tests and benchmark).

Kept free of Prefect imports at module level: the settings a Prefect client reads are fixed
when `prefect` is first imported, so a caller sets the environment first, then calls these.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.server import Sandbox

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOME = PROJECT_ROOT / ".prefect-home"
"""Prefect's local state (SQLite database, result storage) for the local stack and demo."""

SANDBOX_BLOCKS = {
    "records": "sandbox-records",
    "rates": "sandbox-rates",
    "rates_fallback": "sandbox-rates-fallback",
    "ledger": "sandbox-ledger",
}
"""Default HttpService block documents, by sandbox service (the flows' parameter defaults)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_cli() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def local_environment(home: Path = LOCAL_HOME) -> dict[str, str]:
    """Environment of a local stack: project-local state, no telemetry (the server's, and the
    client's, whose first-run notice would otherwise open `make up` and `make demo`)."""
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
    }


@dataclass
class ServerProcess:
    """`prefect server start` on a free loopback port, stopped with its whole process group."""

    process: subprocess.Popen[bytes]
    api_url: str

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def stop(self) -> None:
        stop_group(self.process, signal.SIGTERM, timeout=20)


def stop_group(
    process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, timeout: float = 30
) -> None:
    """Signal the process group of `process` (started with a session of its own), and SIGKILL
    the group if the process outlives `timeout`; nothing if it has already ended."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_healthy(api_url: str, process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no healthy Prefect server at {api_url} after {timeout:.0f} s")


def start_server(
    home: Path = LOCAL_HOME,
    timeout: float = 90.0,
    *,
    options: tuple[str, ...] = (),
    log_name: str = "server.log",
    port: int | None = None,
    ui_api_url: str | None = None,
) -> ServerProcess:
    """Start `prefect server start [options]` under `home` on `port` (a free one if None), its
    log in `home/log_name`: on SQLite there unless the environment names another database
    (the scale profile does). Its UI calls `ui_api_url` (a load balancer), else this server."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = {**os.environ, **local_environment(home)}
    env.pop("PREFECT_API_URL", None)
    # The UI asks this for its API; unset, it would look on port 4200, not this server's.
    env["PREFECT_UI_API_URL"] = ui_api_url or f"http://127.0.0.1:{port}/api"
    log = (home / log_name).open("ab")
    process = subprocess.Popen(
        [prefect_cli(), "server", "start", "--host", "127.0.0.1", "--port", str(port), *options],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = ServerProcess(process=process, api_url=f"http://127.0.0.1:{port}/api")
    try:
        wait_healthy(server.api_url, process, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def register_blocks() -> None:
    """`prefect block register -m blocks` against the server in the environment."""
    subprocess.run(
        [prefect_cli(), "block", "register", "-m", "blocks"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def save_sandbox_blocks(urls: dict[str, str]) -> None:
    """Point the default HttpService documents at a sandbox (idempotent: overwrites)."""
    from blocks import HttpService

    for service, block_name in SANDBOX_BLOCKS.items():
        HttpService(base_url=urls[service], read_timeout=5.0).save(block_name, overwrite=True)


def save_callback_block(url: str) -> None:
    """Point the callbacks flow's SignedWebhook document at `url`, under a fresh key."""
    import secrets

    from pydantic import SecretStr

    from blocks import SignedWebhook
    from flows.callbacks import CALLBACK_BLOCK

    SignedWebhook(url=url, secret=SecretStr(secrets.token_hex(32))).save(
        CALLBACK_BLOCK, overwrite=True
    )


def start_sandbox_fleet(count: int, records: int, prefix: str) -> list[Sandbox]:
    """`count` sandboxes (data sets of their own: seeds differ), each with records and ledger
    blocks `<prefix>-records-<n>`/`<prefix>-ledger-<n>`; rates from the first one."""
    from blocks import HttpService
    from sandbox.server import Sandbox

    sandboxes = [Sandbox(n_records=records, seed=100 + n).start() for n in range(count)]
    rates = sandboxes[0].urls
    HttpService(base_url=rates["rates"]).save(f"{prefix}-rates", overwrite=True)
    HttpService(base_url=rates["rates_fallback"]).save(f"{prefix}-rates-fallback", overwrite=True)
    for n, sandbox in enumerate(sandboxes):
        for service in ("records", "ledger"):
            block = HttpService(base_url=sandbox.urls[service], read_timeout=10.0)
            block.save(f"{prefix}-{service}-{n}", overwrite=True)
    return sandboxes


def sync_parameters(prefix: str, n: int, **extra: Any) -> dict[str, Any]:
    """ledger-sync's parameters for sandbox `n` of a fleet `start_sandbox_fleet` started."""
    return {
        "records_api": f"{prefix}-records-{n}",
        "ledger_api": f"{prefix}-ledger-{n}",
        "rates_api": f"{prefix}-rates",
        "fallback_rates_api": f"{prefix}-rates-fallback",
        "batch_size": 100,
        **extra,
    }
