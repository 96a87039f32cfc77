"""Benchmark: ledger-sync deployment runs per minute on the scale stack, with 1 and 3 workers.

Scenario
    A team moving to the scale profile wants to know what more workers buy: how many
    ledger syncs per minute one process worker gets through, and three, on the same
    highly available Prefect (PostgreSQL, Redis, two API replicas behind HAProxy, S3 results).

Solution
    One scale stack (deployments/scale.py) on databases of the benchmark's own, created afresh,
    with only the `ledger-sync` deployment (no reconcile runs triggered after each sync). Then,
    `repeat` times, for 1 and for 3 workers side by side (each `--limit LIMIT`): the workers
    are started (not timed: they are long-running services), `runs` syncs are created at once,
    each into a fresh ledger of its own data set (`records` records, sandboxes in this
    process), and the round is timed from the first run created to the last one seen final
    (polled every half second). Every run must be Completed and every ledger exact, counted
    at its sandbox, or the figures mean nothing. Runs per minute is `runs` over that time; the
    ratio is 3 workers against 1. The flow-run processes, the workers, the replicas and the
    sandboxes share this machine's cores: on a machine with few cores, more workers mostly
    add CPU contention, which is what the figure shows.

    Before the rounds, the page breakdown (`page_costs`): the flagship's CLI as a whole
    process, of zero records and of `--page-records`, on the scale profile and, against the
    same server, on the local one, each run's time by phase (toolkit/stopwatch.py) and its
    time per page beyond the zero-record run, side by side.

How to run
    make bench-scale                      # the defaults below; needs `make scale-extra`
    .venv/bin/python -m benchmarks.scale_throughput --runs 6 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from benchmarks.processes import BenchmarkError, Measured, Series
from benchmarks.report import BREAKDOWN_HEADERS, BREAKDOWN_LEGEND, breakdown, per_page
from benchmarks.tables import Section
from benchmarks.whole_process import PAGE_SIZE, TIMINGS_ENV

WORKER_COUNTS = (1, 3)
DATABASE = "resilient_flows_bench"
MESSAGING_DB = "3"  # Redis database for Prefect's messaging, not the profile's (1) nor tests'
LEDGER_SYNC = "ledger-sync/ledger-sync"
HEADERS = ["workers", "rounds", "runs", "median s", "min-max s", "runs/min"]
LOCAL_PAGES, SCALE_PAGES = "local profile", "scale profile"


def bench_settings() -> dict[str, str]:
    """The scale profile, on the benchmark's own databases and Redis messaging database."""
    from deployments.profiles import profile_settings

    settings = profile_settings("scale")
    databases = {
        "PREFECT_API_DATABASE_CONNECTION_URL": "",
        "RESILIENT_FLOWS_LEDGER_INDEX_URL": "_ledger",
    }
    for key, suffix in databases.items():
        url = sa.make_url(settings[key]).set(database=DATABASE + suffix)
        settings[key] = url.render_as_string(hide_password=False)
    settings["PREFECT_REDIS_MESSAGING_DB"] = MESSAGING_DB
    return settings


def timed_round(prefix: str, runs: int, records: int) -> float:
    """Seconds from creating `runs` syncs (fresh ledgers) to the last one final; all exact."""
    from deployments.stack import start_sandbox_fleet, sync_parameters
    from deployments.trigger import poll
    from sandbox.verify import check_ledger

    sandboxes = start_sandbox_fleet(runs, records, prefix)
    try:
        from prefect.deployments import run_deployment

        parameters = [sync_parameters(prefix, n) for n in range(runs)]
        started = time.monotonic()
        run_ids = [
            run_deployment(LEDGER_SYNC, parameters=p, timeout=0, as_subflow=False).id
            for p in parameters
        ]
        finals = [poll(run_id, timeout_seconds=1800, max_interval=0.5) for run_id in run_ids]
        seconds = time.monotonic() - started
        failed = [
            f"{run.name}: {run.state.name}" for run in finals if run.state.name != "Completed"
        ]
        if failed:
            raise BenchmarkError(f"{prefix}: runs did not complete: {failed[:5]}")
        for sandbox in sandboxes:
            check = check_ledger(sandbox.dataset.expected_entries(), sandbox.ledger_state())
            if not check.exact or check.applied_ever_twice:
                raise BenchmarkError(f"{prefix}: a ledger is not exact: {check}")
        return seconds
    finally:
        for sandbox in sandboxes:
            sandbox.stop()


def measure(
    home: Path, runs: int, records: int, limit: int, repeat: int, page_records: int
) -> tuple[dict[int, list[float]], list[Series]]:
    """Rounds of `runs` syncs with 1 and with 3 workers, alternating (seconds per round); and
    before them, `page_costs`."""
    from deployments import deploy
    from deployments.scale import ScaleStack, ensure_database
    from deployments.stack import PROJECT_ROOT, local_environment, register_blocks

    os.environ.update(local_environment(home))
    os.environ["PWD"] = str(PROJECT_ROOT)  # prefect.yaml's pull step: this checkout
    settings = bench_settings()
    for key in ("PREFECT_API_DATABASE_CONNECTION_URL", "RESILIENT_FLOWS_LEDGER_INDEX_URL"):
        ensure_database(settings[key], fresh=True)
    times: dict[int, list[float]] = {count: [] for count in WORKER_COUNTS}
    with ScaleStack(home, settings, worker_count=max(WORKER_COUNTS), worker_limit=limit) as stack:
        register_blocks()
        with (home / "deploy.log").open("a") as log:
            code, _ = deploy.deploy(["ledger-sync"], docker=False, log=log)
        if code != 0:
            raise BenchmarkError(f"deploy failed: see {home / 'deploy.log'}")
        pages = page_costs(home, page_records, repeat)
        for i in range(repeat):
            for count in WORKER_COUNTS:
                stack.workers = [stack.start_worker(n) for n in range(count)]
                try:
                    seconds = timed_round(f"bench-{count}w-{i}", runs, records)
                finally:
                    for worker in stack.workers:
                        worker.stop()
                times[count].append(seconds)
                print(
                    f"  {runs} syncs, {count} workers: {seconds:.1f} s, "
                    f"{runs / seconds * 60:.1f} runs/min",
                    file=sys.stderr,
                    flush=True,
                )
    return times, pages


def page_costs(home: Path, records: int, repeat: int) -> list[Series]:
    """`python -m flows.ledger_sync` of 0 and of `records` records, whole processes, on the
    scale profile (PostgreSQL index, checkpoints in the object store) and, against the same
    server, on the local one (SQLite index, checkpoints on disk): each run's time by phase,
    for the page breakdown of benchmarks/report.py. Every ledger must be exact."""
    from deployments.stack import start_sandbox_fleet, sync_parameters
    from sandbox.verify import check_ledger

    local: dict[str, str | None] = {
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": None,  # unset: results on local disk
        "RESILIENT_FLOWS_LEDGER_INDEX_URL": f"sqlite:///{home}/pages-index.sqlite",
    }
    results: dict[tuple[int, str], Series] = {}
    for i in range(repeat):
        for size in (0, records):
            for profile, extra in ((SCALE_PAGES, {}), (LOCAL_PAGES, local)):
                run = home / f"pages-{profile.split()[0]}-{size}-{i}"
                run.mkdir()
                # A sandbox of its own: new services, so no checkpoint or claim of another run
                (sandbox,) = start_sandbox_fleet(1, size, run.name)
                parameters = {**sync_parameters(run.name, 0), "batch_size": PAGE_SIZE}
                try:
                    seconds, phases = timed_sync(parameters, extra, run)
                    check = check_ledger(sandbox.dataset.expected_entries(), sandbox.ledger_state())
                finally:
                    sandbox.stop()
                if not check.exact or check.applied_ever_twice:
                    raise BenchmarkError(f"{profile}, {size} records: not exact: {check}")
                series = results.setdefault((size, profile), Series(size, profile))
                series.runs.append(Measured(seconds, 0))
                series.phases.append(phases)
                print(
                    f"  {size:,} records, {profile}: {seconds:.2f} s", file=sys.stderr, flush=True
                )
    return list(results.values())


def timed_sync(
    parameters: dict[str, object], extra: dict[str, str | None], run: Path
) -> tuple[float, dict[str, float]]:
    """One `python -m flows.ledger_sync` as a whole process (`extra` over this process's
    environment, None unsetting): its seconds and its phases."""
    argv = [sys.executable, "-m", "flows.ledger_sync", *(f"{k}={v}" for k, v in parameters.items())]
    timings = run / "phases.json"
    env = {**os.environ, TIMINGS_ENV: str(timings)}
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(run / "storage")
    with (run / "sync.log").open("w") as log:
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=log, stderr=log, check=True, timeout=1800)
        seconds = time.perf_counter() - started
    return seconds, json.loads(timings.read_text())["seconds"]


def page_section(pages: list[Series]) -> Section:
    """Where a page's time goes on each profile, and what the scale profile's page costs."""
    rows = breakdown(pages, (LOCAL_PAGES, SCALE_PAGES), PAGE_SIZE)
    whole = {
        program: ms["whole"]
        for _, program, ms in per_page(pages, (LOCAL_PAGES, SCALE_PAGES), PAGE_SIZE)
    }
    notes = [BREAKDOWN_LEGEND]
    if len(whole) == 2:
        notes.append(
            f"per page, scale profile against local: {whole[SCALE_PAGES]:.2f} ms against "
            f"{whole[LOCAL_PAGES]:.2f} ms ({whole[SCALE_PAGES] / whole[LOCAL_PAGES]:.1f}x)"
        )
    headers = [*BREAKDOWN_HEADERS[:-1], "above local ms"]
    return Section(
        title="Scale profile: where the time of a page goes",
        about="`python -m flows.ledger_sync batch_size=500` as whole processes, per page of "
        "500 records beyond the zero-record run, on the scale stack's server.",
        headers=headers,
        rows=rows,
        notes=notes,
    )


def section(times: dict[int, list[float]], runs: int, records: int, limit: int) -> Section:
    rows, rates = [], {}
    for count, rounds in times.items():
        if not rounds:
            continue
        median = statistics.median(rounds)
        rates[count] = runs / median * 60
        rows.append(
            [
                str(count),
                str(len(rounds)),
                str(runs),
                f"{median:.1f}",
                f"{min(rounds):.1f}-{max(rounds):.1f}",
                f"{rates[count]:.1f}",
            ]
        )
    notes = [
        f"Each round: {runs} ledger-sync deployment runs created at once, each into a fresh "
        f"ledger of {records} records; timed from the first created to the last final.",
        f"Workers: `prefect worker start --pool local-process --limit {limit}`, through the "
        f"balancer; {os.cpu_count()} cores shared by everything.",
    ]
    if len(rates) == 2:
        notes.append(f"3 workers against 1: {rates[3] / rates[1]:.2f} x the runs per minute.")
    return Section(
        title="Scale profile: ledger syncs per minute",
        about="Deployment runs on the scale stack, with 1 and 3 process workers.",
        headers=HEADERS,
        rows=rows,
        notes=notes,
    )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_throughput")
    parser.add_argument("--runs", type=int, default=24, help="syncs per round (default 24)")
    parser.add_argument("--records", type=int, default=300, help="records per ledger")
    parser.add_argument("--limit", type=int, default=4, help="flow runs per worker at once")
    parser.add_argument("--repeat", type=int, default=2, help="rounds per worker count")
    parser.add_argument(
        "--page-records", type=int, default=50_000, help="records of the page breakdown's sync"
    )
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="also write the table")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"Working directory: {home}", file=sys.stderr, flush=True)
    times, pages = measure(
        home, args.runs, args.records, args.limit, args.repeat, args.page_records
    )
    results = [section(times, args.runs, args.records, args.limit), page_section(pages)]
    print("\n\n".join(result.render(markdown=False) for result in results))
    if args.markdown:
        args.markdown.write_text("\n\n".join(result.render(markdown=True) for result in results))
        print(f"\nWritten to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
