"""Benchmark: what a nightly sync leaves on disk, night after night.

Scenario
    A ledger is synced every night from a records service that grows a little each day, with
    the daily maintenance run after it. Does result storage, and the ledger index, grow with
    the number of syncs (a year of nights fills the disk) or only with the data?

Solution
    One sandbox process of `records` records, one result storage and ledger index for every
    night, as on a machine that runs the nightly deployment. Each night: `grow` records
    added in the middle of the data set (not on the first), then `python -m flows.ledger_sync
    batch_size=500` and `python -m flows.maintenance` as whole processes; the ledger must be
    exact after each sync. After each night the files and bytes of result storage and the
    ledger index's bytes (its SQLite file and journal) are counted. Bytes per record per sync
    is what the night added to result storage over the records synced.

How to run
    Part of `make bench` (`python -m benchmarks`); on its own: `python -m benchmarks --only
    storage --repeat 1`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.checks import exact_ledger
from benchmarks.processes import SandboxProcess, run_beside_server
from benchmarks.tables import Section
from benchmarks.whole_process import FLOW_ARGS, Bench, flow_environment

NIGHTS, RECORDS, GROW = 5, 20_000, 1_000
QUICK = (3, 2_000, 100)  # nights, records, growth: a smoke run
MAINTENANCE_ARGS = ["-m", "flows.maintenance", "older_than_days=30"]


@dataclass(frozen=True)
class Night:
    records: int
    files: int
    stored: int  # bytes of result storage
    indexed: int  # bytes of the ledger index


def measure_storage(bench: Bench, nights: int, records: int, grow: int) -> Section:
    from deployments.stack import register_blocks, save_sandbox_blocks

    run_dir = bench.home / "storage-growth"
    run_dir.mkdir()
    env = {**bench.env, **flow_environment(run_dir)}
    sandbox = SandboxProcess(records, bench.env, run_dir / "sandbox.log")
    measured: list[Night] = []
    try:
        register_blocks()
        save_sandbox_blocks(sandbox.urls)
        for night in range(nights):
            if night:
                sandbox.control("/grow", {"count": grow, "where": "middle"})
            for name, argv in (("sync", FLOW_ARGS), ("maintenance", MAINTENANCE_ARGS)):
                log = run_dir / f"night-{night}-{name}.log"
                run_beside_server(
                    [sys.executable, *argv], env, log, bench.timeout, bench.server_pgid, False
                )
                if name == "sync":
                    exact_ledger(sandbox, f"night {night + 1}")
            measured.append(counted(run_dir, records + night * grow))
            print(f"  storage, night {night + 1}: {measured[-1]}", file=sys.stderr, flush=True)
    finally:
        sandbox.stop()
    return section(measured, grow)


def counted(run_dir: Path, records: int) -> Night:
    stored = [path.stat().st_size for path in (run_dir / "storage").rglob("*") if path.is_file()]
    index = sum(path.stat().st_size for path in run_dir.glob("ledger-index.sqlite*"))
    return Night(records, len(stored), sum(stored), index)


def section(nights: list[Night], grow: int) -> Section:
    rows, previous = [], 0
    for number, night in enumerate(nights, 1):
        added = (night.stored - previous) / night.records
        rows.append(
            [
                str(number),
                f"{night.records:,}",
                str(night.files),
                f"{night.stored / 1024:.1f}",
                f"{added:.2f}",
                f"{night.indexed / 1024:.0f}",
            ]
        )
        previous = night.stored
    first, last = nights[0], nights[-1]
    return Section(
        title="Storage after each nightly sync",
        about=(
            f"A nightly `ledger_sync` and `maintenance`, {first.records:,} records growing by "
            f"{grow:,} a night, one result storage and ledger index throughout."
        ),
        headers=["night", "records", "files", "stored KiB", "B/record added", "index KiB"],
        rows=rows,
        notes=[
            "stored KiB, files: result storage after the night's sync and maintenance",
            "B/record added: bytes the night added to result storage, over its records",
            "index KiB: the ledger index's SQLite file and journal",
            f"last night / first: stored {last.stored / max(first.stored, 1):.2f}x, "
            f"index {last.indexed / max(first.indexed, 1):.2f}x, records "
            f"{last.records / max(first.records, 1):.2f}x",
        ],
    )
