"""`python -m deployments up` (`make up`): the whole local stack, until Ctrl-C.

Scenario: a user wants to see every flow of the project in the Prefect UI and run them from
there, with one command and nothing installed but the project.

Solution: a Prefect server on SQLite under `.prefect-home/` (unless `PREFECT_API_URL` points
at one, or a stack started earlier from the same home is still up: it is reused), the
sandbox upstream and a webhook receiver for the callbacks flow, the blocks and their default
documents, the work pools and every deployment (`deployments deploy`), one process worker
and one task worker (for the message-queue flow). It prints the UI URL and stays up; Ctrl-C
(or SIGTERM) stops everything it started.

With `PREFECT_SERVER_API_AUTH_STRING=user:password` in the environment the server it starts
refuses unauthenticated API calls, and everything it starts authenticates with that string
(`PREFECT_API_AUTH_STRING`); the UI asks for it.

How to run:
    make up                       # or: .venv/bin/python -m deployments up [--home DIR]
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


def main(argv: list[str]) -> int:
    from deployments.stack import LOCAL_HOME, local_environment, prefect_cli, wait_healthy

    parser = argparse.ArgumentParser(prog="python -m deployments up")
    parser.add_argument("--home", type=Path, default=LOCAL_HOME, help="state directory")
    parser.add_argument("--records", type=int, default=2000, help="sandbox data set size")
    args = parser.parse_args(argv)
    home: Path = args.home.resolve()
    os.environ.update(local_environment(home))
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
    try:
        if not os.environ.get("PREFECT_API_URL"):
            os.environ["PREFECT_API_URL"] = _running_stack(stack_file) or ""
        if not os.environ["PREFECT_API_URL"]:
            from deployments.stack import start_server

            print(f"Starting a Prefect server (state in {home}) ...", flush=True)
            server = start_server(home)
            os.environ["PREFECT_API_URL"] = server.api_url
            stack_file.write_text(json.dumps({"api_url": server.api_url}))
        wait_healthy(os.environ["PREFECT_API_URL"], None, 30)

        from deployments import deploy
        from deployments.stack import save_callback_block, save_sandbox_blocks
        from sandbox.receiver import Receiver
        from sandbox.server import Sandbox

        sandbox = Sandbox(n_records=args.records).start()
        receiver = Receiver()
        try:
            if deploy.main([]) != 0:
                return 1
            save_sandbox_blocks(sandbox.urls)
            save_callback_block(f"{receiver.url}/callbacks")
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
            ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
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
