"""The resume benchmark: a cold sync killed at 90 % of its batches, then run again.

Scenario
    A worker dies near the end of a long sync. What does finishing it cost: a fraction of a
    run, or the run again? The goal is a resume that takes at most 15 % of a full
    run, with every guarantee kept: the ledger exact, no record applied twice.

Solution
    `kill_at_share` starts the cold command (benchmarks/whole_process.py) in a process group
    of its own, on a reset ledger and a fresh, empty result storage and ledger index, polls
    the sandbox's ledger until `KILL_AT` of the sync's batches are applied, and SIGKILLs the
    group: the flow process and anything it started, as a lost machine would. That run is
    not timed. The resume is then the same command again, timed as a whole process like every
    other program; after it the ledger must be exact.

How to run
    Part of `make bench`; alone: `python -m benchmarks --only ledger --records 100000`.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from pathlib import Path

from benchmarks.processes import PROJECT_ROOT, BenchmarkError, SandboxProcess

KILL_AT = 0.9
"""The share of the sync's batches in the ledger when the run is killed."""
POLL_SECONDS = 0.05


def kill_at_share(
    argv: list[str],
    env: dict[str, str],
    log_path: Path,
    sandbox: SandboxProcess,
    batches: int,
    timeout: float,
) -> int:
    """Run `argv` until `KILL_AT` of `batches` are applied, then SIGKILL its process group;
    the batches applied when it died."""
    target = math.ceil(batches * KILL_AT)
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            argv,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while applied(sandbox) < target:
            if child.poll() is not None:
                raise BenchmarkError(f"{log_path.name}: the run ended before {target} batches")
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{log_path.name}: {target} batches not reached in time")
            time.sleep(POLL_SECONDS)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    return applied(sandbox)


def applied(sandbox: SandboxProcess) -> int:
    return sandbox.control("/counters")["ledger"]["applied"]
