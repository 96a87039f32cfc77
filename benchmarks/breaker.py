"""Benchmark: what the circuit breaker saves while the primary rates service is down.

Scenario
    Nightly, one `ledger_sync` per ledger, one after another; tonight the primary rates
    service answers every request with 503. Each sync falls back to the secondary rates
    service and ends exact either way, but without a breaker every sync first spends its
    whole retry budget on the primary: 1 + RESILIENT_FLOWS_UPSTREAM_RETRIES requests (9 by
    default) and the backoff between them. With the breaker shared through Redis, the first
    sync's failures open it, and the syncs after it skip the primary without a request until
    a probe after the cooldown. How many calls reach the primary, and how much time is lost?

Solution
    Three series of `runs` whole processes of `python -m flows.ledger_sync batch_size=500` at
    RECORDS records, each run on a reset ledger with a fresh result storage and ledger index
    (so that no rates are pinned or stored by an earlier run and every run asks for them):
      primary up         the baseline;
      down, no breaker   the primary forced to answer 503; RESILIENT_FLOWS_BREAKER_FAILURE_
                         THRESHOLD set beyond reach, so the breaker never opens (the same
                         code, its Redis round trip per call included);
      down, breaker      the primary forced to 503, the breaker as configured (opens after 5
                         consecutive failures, probes after 30 s, unless set otherwise).
    Each series has a sandbox process of its own, so its breaker, named after the sandbox's
    URL, starts closed. The sandbox counts the requests that reached each rates service; the
    time lost is a series' total wall time less the baseline's; every ledger must be exact.

How to run
    Part of `make bench` (`python -m benchmarks`); on its own: `python -m benchmarks --only
    breaker --repeat 1`.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field

from benchmarks.checks import exact_ledger
from benchmarks.processes import Measured, SandboxProcess, run_beside_server
from benchmarks.tables import Section
from benchmarks.whole_process import FLOW_ARGS, Bench, flow_environment

RECORDS = 1_000
RUNS, QUICK_RUNS = 10, 3
NEVER_OPENS = {"RESILIENT_FLOWS_BREAKER_FAILURE_THRESHOLD": str(10**9)}
UP, NO_BREAKER, BREAKER = "primary up", "primary down, no breaker", "primary down, breaker"
MODES: tuple[tuple[str, bool, dict[str, str]], ...] = (
    (UP, False, {}),
    (NO_BREAKER, True, NEVER_OPENS),
    (BREAKER, True, {}),
)


@dataclass
class ModeRuns:
    mode: str
    runs: list[Measured] = field(default_factory=list)
    primary_calls: list[int] = field(default_factory=list)
    fallback_calls: list[int] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return sum(run.seconds for run in self.runs)


def run_mode(bench: Bench, mode: str, down: bool, extra_env: dict[str, str], runs: int) -> ModeRuns:
    """`runs` syncs one after another against a sandbox of their own, primary up or down."""
    from deployments.stack import register_blocks, save_sandbox_blocks

    mode_dir = bench.home / "breaker" / mode.replace(" ", "-").replace(",", "")
    mode_dir.mkdir(parents=True)
    sandbox = SandboxProcess(RECORDS, bench.env, mode_dir / "sandbox.log")
    result = ModeRuns(mode)
    try:
        register_blocks()
        save_sandbox_blocks(sandbox.urls)
        if down:
            sandbox.control("/faults", {"service": "rates", "faults": {"force_status": [503]}})
        for i in range(runs):
            sandbox.control("/reset", {})  # the ledger and the counters, not the faults
            run_dir = mode_dir / f"run-{i}"
            run_dir.mkdir()
            env = {**bench.env, **flow_environment(run_dir), **extra_env}
            argv = [sys.executable, *FLOW_ARGS]
            measured = run_beside_server(
                argv, env, run_dir / "sync.log", bench.timeout, bench.server_pgid, bench.settle
            )
            exact_ledger(sandbox, f"{mode}, run {i + 1}")
            counters = sandbox.control("/counters")
            result.runs.append(measured)
            result.primary_calls.append(counters["rates"]["requests"])
            result.fallback_calls.append(counters["rates_fallback"]["requests"])
            print(
                f"  breaker, {mode}, run {i + 1}: {measured.seconds:.2f} s, "
                f"{result.primary_calls[-1]} calls to the primary",
                file=sys.stderr,
                flush=True,
            )
    finally:
        sandbox.stop()
    return result


def measure_breaker(bench: Bench, runs: int) -> Section:
    """The three series, one after another, as a table."""
    return breaker_section([run_mode(bench, *mode, runs) for mode in MODES])


def breaker_section(results: list[ModeRuns]) -> Section:
    """The table: per series, calls to each rates service, time per run and time lost."""
    baseline = next(r for r in results if r.mode == UP)
    rows = []
    for r in results:
        lost = r.total_seconds - baseline.total_seconds
        rows.append(
            [
                r.mode,
                str(len(r.runs)),
                str(sum(r.primary_calls)),
                " ".join(map(str, r.primary_calls)),
                str(sum(r.fallback_calls)),
                f"{statistics.median(run.seconds for run in r.runs):.2f}",
                f"{r.total_seconds:.1f}",
                "-" if r is baseline else f"{lost:+.1f}",
            ]
        )
    notes = [
        "calls: requests that reached the service, counted by the sandbox",
        "time lost: the series' total wall time less that of the primary-up series",
    ]
    by_mode = {r.mode: r for r in results}
    if NO_BREAKER in by_mode and BREAKER in by_mode:
        without, with_ = by_mode[NO_BREAKER], by_mode[BREAKER]
        calls_without, calls_with = sum(without.primary_calls), sum(with_.primary_calls)
        lost_without = without.total_seconds - baseline.total_seconds
        lost_with = with_.total_seconds - baseline.total_seconds
        notes.append(
            f"the breaker: {calls_with} calls to the down primary instead of {calls_without} "
            f"({ratio(calls_without, calls_with)} fewer); {lost_with:+.1f} s lost against the "
            f"baseline instead of {lost_without:+.1f} s"
        )
    return Section(
        title=f"Circuit breaker: {len(baseline.runs)} syncs in a row, primary rates service down",
        about=(
            f"`python -m flows.ledger_sync batch_size=500` at {RECORDS:,} records, run after "
            "run, each on a reset ledger with fresh storage (every run asks for rates); down: "
            "the primary answers 503 to every request and the secondary answers; no breaker: "
            "RESILIENT_FLOWS_BREAKER_FAILURE_THRESHOLD=1000000000 (it never opens)."
        ),
        headers=[
            "series",
            "runs",
            "calls to primary",
            "per run",
            "calls to secondary",
            "median s per run",
            "total s",
            "time lost s",
        ],
        rows=rows,
        notes=notes,
    )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "all"
