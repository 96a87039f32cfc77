"""Benchmark: the flagship as a user runs it, every program timed as a whole process.

Scenario
    benchmarks/ledger_sync_vs_httpx.py times `ledger_sync` inside a process that has already
    imported Prefect and talked to the server: a figure no user ever sees. A user types
    `python -m flows.ledger_sync` and waits for the interpreter to start, Prefect and the
    project to import, the run to talk to its server and upstreams, and the process to exit;
    then runs it again, expecting a rerun with nothing new to do to cost next to nothing. How
    much slower than a bare script is that, what does the rerun cost beyond the imports, and
    how does memory grow with the number of records?

Solution
    The Prefect server of `python -m benchmarks` (a temporary PREFECT_HOME, results stored
    there), and per record count one fresh `python -m sandbox --records N` process, faults
    off, with the block documents saved against it. Then, `--repeat` times and side by side,
    each of these programs as a child process of its own:
      floor   a bare asyncio + httpx script doing the same HTTP work (`bare_sync` of
              benchmarks/ledger_sync_vs_httpx.py), the ledger reset after it;
      cold    `python -m flows.ledger_sync batch_size=500` with the ledger reset and a fresh,
              empty result storage and ledger index (RESILIENT_FLOWS_LEDGER_INDEX_URL) of
              its own, so that every cold run is really cold;
      no-op   the same command again, same storage and index, nothing changed;
      resume  the cold command on a reset ledger and fresh storage, SIGKILLed once 90 % of
              its batches are applied (not timed), then again: the resume is timed
              (benchmarks/resume.py);
      naive   once, at 10,000 records: the sync written with a task per record and
              Prefect's defaults (benchmarks/naive_prefect.py);
    and once the import floor, `python -c "import prefect"` and `... "import flows.ledger_sync"`.
    Each child is timed as a whole and its own peak RSS taken, the server and the sandbox
    not counted (benchmarks/processes.py: how, and why through a bare launcher). Before each
    child it waits for the Prefect server to go quiet: after a cold run the server goes on
    digesting its events and task runs for seconds, which on two cores would be timed
    against the next child (`--no-settle` starts at once); the server's CPU time during
    each child is reported, as it is part of what a run costs. After every floor, cold,
    no-op and resume run the ledger must be exact (its total equals the sandbox's expected total,
    every valid record held exactly once) and a no-op must leave it unchanged; anything
    else fails the benchmark loudly. The report (benchmarks/report.py) gives medians,
    min-max, peak RSS, the HTTP requests each program made (records/rates/ledger, from the
    sandbox's counters) and the ratios: cold / floor, cold / no-op, resume / cold, the
    cold run's memory growth from the smallest to the largest size, and what a no-op costs
    beyond its imports and the fixed cost of a sync against `import prefect`; with
    `--markdown` a chart too (benchmarks/chart.py). Every process it starts is stopped on
    the way out, failure and Ctrl-C included.

How to run
    The `ledger` suite of `python -m benchmarks` (`make bench`: 0, 10k, 100k and 1M records);
    a smoke run: `.venv/bin/python -m benchmarks --only ledger --quick --repeat 1` (10k)
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.checks import exact_ledger, request_counts
from benchmarks.processes import (
    BenchmarkError,
    Measured,
    SandboxProcess,
    Series,
    run_beside_server,
)
from benchmarks.resume import kill_at_share

PAGE_SIZE = 500
DEFAULT_RECORDS = [0, 10_000, 100_000, 1_000_000]  # 0: the fixed cost of a sync
QUICK_RECORDS = [10_000]

FLOOR_CODE = (
    "import sys; from benchmarks.ledger_sync_vs_httpx import floor; "
    f"floor(sys.argv[1], {PAGE_SIZE})"
)
FLOW_ARGS = ["-m", "flows.ledger_sync", f"batch_size={PAGE_SIZE}"]
IMPORTS = {
    "import prefect": ["-c", "import prefect"],
    "import flows.ledger_sync": ["-c", "import flows.ledger_sync"],
}
FLOOR, COLD, NOOP = "floor (asyncio+httpx)", "ledger_sync cold", "ledger_sync no-op rerun"
RESUME = "ledger_sync resume (killed at 90%)"
NAIVE = "naive Prefect (a task per record)"
PROGRAMS = (FLOOR, COLD, NOOP, RESUME, NAIVE)
NAIVE_RECORDS = 10_000
"""The size the naive version runs at, once per benchmark (a task run per record is slow)."""
INDEX_ENV = "RESILIENT_FLOWS_LEDGER_INDEX_URL"
TIMINGS_ENV = "RESILIENT_FLOWS_TIMINGS_FILE"  # where floor and flagship write time by phase


@dataclass
class Bench:
    home: Path
    env: dict[str, str]
    repeat: int
    timeout: float
    settle: bool = True
    server_pgid: int | None = None
    results: list[Series] = field(default_factory=list)

    def series(self, records: int | None, program: str) -> Series:
        for series in self.results:
            if (series.records, series.program) == (records, program):
                return series
        series = Series(records, program)
        self.results.append(series)
        return series

    def measure(
        self, records: int | None, program: str, argv: list[str], env: dict[str, str], log: Path
    ) -> Measured:
        measured = run_beside_server(
            [sys.executable, *argv], env, log, self.timeout, self.server_pgid, self.settle
        )
        self.series(records, program).runs.append(measured)
        size = "" if records is None else f"{records:,} records, "
        quiet = measured.settled is not None and measured.settled >= 0.05
        waited = f" (after {measured.settled:.1f} s for the server to go quiet)" if quiet else ""
        figures = f"{measured.seconds:.2f} s, {measured.peak_rss_kib / 1024:.0f} MiB{waited}"
        print(f"  {size}{program}: {figures}", file=sys.stderr, flush=True)
        return measured

    def measure_phases(
        self, records: int, program: str, argv: list[str], env: dict[str, str], log: Path
    ) -> None:
        """`measure`, and the program's own time by phase (toolkit/stopwatch.py)."""
        timings = log.with_suffix(".phases.json")
        self.measure(records, program, argv, {**env, TIMINGS_ENV: str(timings)}, log)
        self.series(records, program).phases.append(json.loads(timings.read_text())["seconds"])

    def import_floor(self) -> None:
        logs = self.home / "imports"
        logs.mkdir()
        for i in range(self.repeat):
            for program, argv in IMPORTS.items():
                log = logs / f"{program.split()[-1]}-{i}.log"
                self.measure(None, program, argv, self.env, log)

    def size(self, records: int) -> None:
        from deployments.stack import register_blocks, save_sandbox_blocks

        size_dir = self.home / f"records-{records}"
        size_dir.mkdir()
        sandbox = SandboxProcess(records, self.env, size_dir / "sandbox.log")
        try:
            register_blocks()
            save_sandbox_blocks(sandbox.urls)
            floor = ["-c", FLOOR_CODE, json.dumps(sandbox.urls)]
            if records == NAIVE_RECORDS:
                sandbox.control("/reset", {})
                naive = ["-m", "benchmarks.naive_prefect", json.dumps(sandbox.urls)]
                self.measure(records, NAIVE, naive, self.env, size_dir / "naive.log")
                exact_ledger(sandbox, f"naive Prefect, {records} records")
                self.series(records, NAIVE).requests = request_counts(sandbox.control("/counters"))
            for i in range(self.repeat):
                sandbox.control("/reset", {})
                self.measure_phases(records, FLOOR, floor, self.env, size_dir / f"floor-{i}.log")
                exact_ledger(sandbox, f"floor, {records} records")
                self.series(records, FLOOR).requests = request_counts(sandbox.control("/counters"))
                sandbox.control("/reset", {})

                run_dir = size_dir / f"run-{i}"  # fresh storage and index: really cold
                run_dir.mkdir()
                env = {**self.env, **flow_environment(run_dir)}
                self.measure_phases(records, COLD, FLOW_ARGS, env, run_dir / "cold.log")
                after_cold = exact_ledger(sandbox, f"cold run, {records} records")
                counters = sandbox.control("/counters")
                self.series(records, COLD).requests = request_counts(counters)

                self.measure(records, NOOP, FLOW_ARGS, env, run_dir / "no-op.log")
                after_noop = exact_ledger(sandbox, f"no-op rerun, {records} records")
                if after_noop != after_cold:
                    raise BenchmarkError(
                        f"no-op rerun, {records} records: it changed the ledger "
                        f"({after_cold['summary']} before, {after_noop['summary']} after)"
                    )
                self.series(records, NOOP).requests = request_counts(
                    sandbox.control("/counters"), counters
                )
                if records:  # zero records: nothing to kill a run in the middle of
                    self.resume(records, sandbox, size_dir / f"resume-{i}")
        finally:
            sandbox.stop()

    def resume(self, records: int, sandbox: SandboxProcess, run_dir: Path) -> None:
        """A cold run SIGKILLed at 90 % of its batches (not timed), then the resume, timed."""
        run_dir.mkdir()
        env = {**self.env, **flow_environment(run_dir)}
        sandbox.control("/reset", {})
        killed = [sys.executable, *FLOW_ARGS]
        kill_at_share(
            killed, env, run_dir / "killed.log", sandbox, records // PAGE_SIZE, self.timeout
        )
        before = sandbox.control("/counters")
        self.measure(records, RESUME, FLOW_ARGS, env, run_dir / "resume.log")
        exact_ledger(sandbox, f"resume, {records} records")
        self.series(records, RESUME).requests = request_counts(sandbox.control("/counters"), before)


def flow_environment(run_dir: Path) -> dict[str, str]:
    """A ledger_sync run's own result storage and ledger index, under `run_dir`."""
    return {
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(run_dir / "storage"),
        INDEX_ENV: f"sqlite:///{run_dir / 'ledger-index.sqlite'}",
    }
