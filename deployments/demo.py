"""`make demo`: the flagship ledger sync, end to end, against a faulty sandbox.

Scenario: a new user wants to see, in one command, that the sync survives a hostile upstream
and leaves the ledger exact.

Solution: start the project's sandbox upstream with faults on (5xx, 429, dropped connections,
including drops after the ledger applied a POST), a local Prefect server (SQLite under
`.prefect-home/`, unless `PREFECT_API_URL` names one), register the blocks, point the default
block documents at the sandbox, run `ledger_sync` (`python -m flows.ledger_sync`: a progress
bar per phase and only the warnings and errors of its logs, every line with `--verbose`), and
compare the ledger with the total the sandbox expects. Everything started is stopped; the
exit code is 0 only if the ledger is exact.

How to run:
    make demo                      # or: .venv/bin/python -m deployments.demo --records 5000
    make demo ARGS=--keep          # keep the server up afterwards to browse the run in the UI
    make demo ARGS=--verbose       # every log line of the run (one per task run)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile

from deployments.stack import local_environment, register_blocks, save_sandbox_blocks, start_server
from sandbox.server import Sandbox
from sandbox.verify import check_ledger

DEMO_FAULTS = {
    "records": {"error_rate": 0.10, "rate_limit_rate": 0.05, "drop_rate": 0.05},
    "rates": {"error_rate": 0.20},
    "ledger": {"error_rate": 0.15, "drop_rate": 0.05, "drop_after_apply_rate": 0.05},
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.demo", description=__doc__)
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--invalid-fraction", type=float, default=0.04)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="keep the server up until Ctrl-C")
    parser.add_argument("--verbose", action="store_true", help="every log line of the run")
    args = parser.parse_args(argv)

    os.environ.update(local_environment())
    # The sandbox's ledger lives only as long as the demo, so does the durable record of what
    # it holds: a later demo's sandbox, on a port an earlier one used, starts empty too.
    state = tempfile.TemporaryDirectory(prefix="resilient-flows-demo-")
    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = f"{state.name}/storage"
    os.environ["RESILIENT_FLOWS_LEDGER_INDEX_URL"] = f"sqlite:///{state.name}/ledger-index.sqlite"
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        print("Starting a local Prefect server (state in .prefect-home/) ...", flush=True)
        server = start_server()
        os.environ["PREFECT_API_URL"] = server.api_url
    sandbox = Sandbox(n_records=args.records, invalid_fraction=args.invalid_fraction).start()
    try:
        for service, faults in DEMO_FAULTS.items():
            sandbox.set_faults(service, **faults)
        register_blocks()
        save_sandbox_blocks(sandbox.urls)

        print(f"Syncing {args.records} records through a faulty sandbox ...", flush=True)
        # A process of its own, like a deployment run: its logs and events are flushed to the
        # server when it exits, before the server is stopped.
        sync = [sys.executable, "-m", "flows.ledger_sync", f"batch_size={args.batch_size}"]
        run = subprocess.run([*sync, *(["--verbose"] if args.verbose else [])], check=False)
        check = check_ledger(sandbox.dataset.expected_entries(), sandbox.ledger_state())
        print(f"Faults met:   {faults_met(sandbox.counters())}")
        print(f"Ledger exact: {'yes' if check.exact else 'NO'} ({check})")
        ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
        if args.keep and server is not None:
            print(f"The UI stays up at {ui} until Ctrl-C.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                server.process.wait()
        return 0 if check.exact and run.returncode == 0 else 1
    finally:
        sandbox.stop()
        if server is not None:
            server.stop()
        state.cleanup()


def faults_met(counters: dict) -> str:
    """A one-line count of the failures the sandbox injected, over all services."""
    errors = dropped = 0
    for service in counters.values():
        if not isinstance(service, dict):
            continue
        for status, count in service.get("by_status", {}).items():
            if int(status) >= 429:
                errors += count
        dropped += service.get("dropped", 0)
    return f"{errors} error answers (429/5xx), {dropped} dropped connections"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
