"""`python -m deployments up` (`make up`): the whole local stack, until Ctrl-C.

Scenario: a user wants to see every flow of the project in the Prefect UI and run them from
there, with one command and nothing installed but the project.

Solution: a Prefect server on SQLite under `.prefect-home/` (unless `PREFECT_API_URL` points
at one, or a stack started earlier from the same home is still up: it is reused), the
sandbox upstream and a webhook receiver for the callbacks flow, the blocks and their default
documents, the work pools and every deployment (`deployments deploy`, whose output, Prefect's
deploy panels, goes to `deploy.log` in the home), one process worker and one task worker
(for the message-queue flow). It prints one table of what it started (each deployment with
its work pool and what starts it, the workers, the sandbox, the server, the UI), then the
UI URL, and stays up; Ctrl-C (or SIGTERM) stops everything it started.

With `PREFECT_SERVER_API_AUTH_STRING=user:password` in the environment the server it starts
refuses unauthenticated API calls, and everything it starts authenticates with that string
(`PREFECT_API_AUTH_STRING`); the UI asks for it.

`--profile scale` starts the scale profile's stack instead (deployments/scale_up.py).

How to run:
    make up                       # or: .venv/bin/python -m deployments up [--home DIR]
    make up-scale                 # or: .venv/bin/python -m deployments up --profile scale
    PREFECT_SERVER_API_AUTH_STRING=admin:change-me make up
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    from deployments.profiles import profile_names, profile_settings
    from deployments.stack import LOCAL_HOME, local_environment, prefect_cli, wait_healthy

    parser = argparse.ArgumentParser(prog="python -m deployments up")
    parser.add_argument(
        "--home", type=Path, help="state directory (default .prefect-home, .prefect-home/scale)"
    )
    parser.add_argument("--records", type=int, default=2000, help="sandbox data set size")
    parser.add_argument(
        "--profile",
        choices=profile_names(),
        default="local",
        help="settings from deployments/profiles.toml (scale: PostgreSQL, Redis, replicas)",
    )
    args = parser.parse_args(argv)
    if args.profile != "local":
        from deployments.scale_up import up_scale

        home = args.home or LOCAL_HOME / args.profile
        return up_scale(home.resolve(), args.records, profile_settings(args.profile))
    home: Path = (args.home or LOCAL_HOME).resolve()
    os.environ.update({**profile_settings("local"), **local_environment(home)})
    if os.environ.get("PREFECT_SERVER_API_AUTH_STRING"):
        # The server we start asks for it; the CLI, the workers and their flow runs send it.
        os.environ.setdefault(
            "PREFECT_API_AUTH_STRING", os.environ["PREFECT_SERVER_API_AUTH_STRING"]
        )
    os.environ.setdefault("PWD", str(Path.cwd()))

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    started: list[subprocess.Popen[bytes]] = []
    server = None
    stack_file = home / "stack.json"
    origin = "from PREFECT_API_URL"
    try:
        if not os.environ.get("PREFECT_API_URL"):
            os.environ["PREFECT_API_URL"] = _running_stack(stack_file) or ""
            origin = f"reused: started earlier, log {shown(home / 'server.log')}"
        if not os.environ["PREFECT_API_URL"]:
            origin = f"started now, log {shown(home / 'server.log')}"
            from deployments.stack import start_server

            print(f"Starting a Prefect server (state in {home}) ...", flush=True)
            server = start_server(home)
            os.environ["PREFECT_API_URL"] = server.api_url
            stack_file.write_text(json.dumps({"api_url": server.api_url}))
        wait_healthy(os.environ["PREFECT_API_URL"], None, 30)

        from sandbox.receiver import Receiver
        from sandbox.server import Sandbox

        sandbox = Sandbox(n_records=args.records).start()
        receiver = Receiver()
        try:
            callback_url = f"{receiver.url}/callbacks"
            deployed = provision(home, sandbox.urls, callback_url)
            if deployed is None:
                print(f"deploy failed: see {home / 'deploy.log'}", file=sys.stderr)
                return 1
            workers = {
                "worker.log": [prefect_cli(), "worker", "start", "--pool", "local-process"],
                "task-worker.log": [sys.executable, "-m", "flows.message_queue_worker"],
            }
            for log_name, command in workers.items():
                log = (home / log_name).open("ab")
                started.append(
                    subprocess.Popen(
                        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
            api_url = os.environ["PREFECT_API_URL"]
            ui = api_url.removesuffix("/api")
            rows = [
                *deployment_rows(deployed),
                None,
                *process_rows(home, sandbox.urls, callback_url),
                ("Prefect server", api_url, origin),
                ("UI", ui, "Deployments > pick one > Run"),
            ]
            print_table(rows)
            print(f"UI: {ui}  (deployments: {ui}/deployments). Ctrl-C stops the stack.", flush=True)
            while not stop.wait(1):
                for (log_name, _), process in zip(workers.items(), started, strict=True):
                    if process.poll() is not None:
                        print(f"a worker stopped; see {home / log_name}", file=sys.stderr)
                        return 1
            return 0
        finally:
            receiver.close()
            sandbox.stop()
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
        if server is not None:
            server.stop()
            stack_file.unlink(missing_ok=True)


def provision(home: Path, sandbox_urls: dict[str, str], callback_url: str) -> list | None:
    """Deploy (Prefect's output to `home/deploy.log`) and point the blocks at the sandbox and
    the receiver; the deployments deployed, or None if deploying failed."""
    from deployments import deploy
    from deployments.stack import save_callback_block, save_sandbox_blocks

    with (home / "deploy.log").open("a") as log:
        code, deployed = deploy.deploy([], docker=False, log=log)
        if code != 0:
            return None
        save_sandbox_blocks(sandbox_urls)
        save_callback_block(callback_url)
    return deployed


Row = tuple[str, str, str] | None
"""A row of the table `up` prints (what, where, details); None between two sections."""


def starts(deployment: dict[str, Any]) -> str:
    """What starts a prefect.yaml deployment: its schedules, its triggers, or a person."""
    ways = []
    for schedule in deployment.get("schedules") or []:
        zone = f" ({schedule['timezone']})" if schedule.get("timezone") else ""
        if schedule.get("cron") is not None:
            ways.append(f"cron {schedule['cron']}{zone}")
        elif schedule.get("interval") is not None:
            ways.append(f"every {schedule['interval']} s{zone}")
        elif schedule.get("rrule") is not None:
            ways.append(f"rrule {schedule['rrule']}{zone}")
    for trigger in deployment.get("triggers") or []:
        ways.append(f"on event {', '.join(trigger.get('expect') or ['(any)'])}")
    return "; ".join(ways) or "on demand"


def deployment_rows(deployed: list[dict[str, Any]]) -> list[Row]:
    """A row per deployment: the name `python -m deployments run` takes, its pool, its start."""
    from deployments.check import load_entrypoint
    from deployments.deploy import pool_of
    from deployments.stack import PROJECT_ROOT

    rows: list[Row] = []
    for deployment in deployed:
        flow, _ = load_entrypoint(deployment["entrypoint"], PROJECT_ROOT)  # checked already
        name = f"{flow.name}/{deployment['name']}"
        rows.append((name, f"pool {pool_of(deployment)}", starts(deployment)))
    return rows


def process_rows(home: Path, sandbox_urls: dict[str, str], receiver_url: str) -> list[Row]:
    """Rows for what `up` runs beside the server: workers, sandbox services, receiver."""
    from deployments.stack import SANDBOX_BLOCKS
    from flows.callbacks import CALLBACK_BLOCK

    return [
        ("process worker", "pool local-process", f"log {shown(home / 'worker.log')}"),
        ("task worker", "message-queue items", f"log {shown(home / 'task-worker.log')}"),
        *[
            (f"sandbox {service}", sandbox_urls[service], f"block {block}")
            for service, block in SANDBOX_BLOCKS.items()
        ],
        ("webhook receiver", receiver_url, f"block {CALLBACK_BLOCK}"),
        ("Prefect's deploy output", "", f"log {shown(home / 'deploy.log')}"),
    ]


def print_table(rows: list[Row], title: str = "resilient-flows: the local stack") -> None:
    """The rows as one rich table on stdout (wide enough for URLs when it is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a pipe or a file: no terminal width to respect
        console = Console(width=160)
    table = Table(title=title)
    table.add_column("started", no_wrap=True)  # names and URLs to copy: never cut
    table.add_column("where", no_wrap=True)
    table.add_column("details", overflow="fold")  # wrapped, not cut (an rrule has no spaces)
    for row in rows:
        if row is None:
            table.add_section()
        else:
            table.add_row(*row)
    console.print(table)


def shown(path: Path) -> str:
    """A path as a user types it from here: relative under the current directory."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _running_stack(stack_file: Path) -> str | None:
    """The API URL of a stack started earlier from this home, if it still answers."""
    import urllib.request

    if not stack_file.exists():
        return None
    api_url = json.loads(stack_file.read_text())["api_url"]
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2):
            return api_url
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
