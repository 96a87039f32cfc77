"""`python -m benchmarks`: every benchmark of `make bench`, against one Prefect server.

Scenario
    A user deciding whether the orchestration is worth its cost wants every figure measured
    the same day, on the same machine, against the same server, each beside its baseline.

Solution
    One Prefect server (a temporary PREFECT_HOME, results stored there) for four suites, run
    in turn, each with its own sandbox processes, faults off unless the suite is about one:
      ledger    ledger_sync as a whole process against the floor, no-op reruns, resumes and
                the naive Prefect version, at each record count (benchmarks/whole_process.py);
      breaker   syncs in a row while the primary rates service is down, with and without the
                circuit breaker (benchmarks/breaker.py);
      queue     items per second through the message queue with 1 and 2 task workers
                (benchmarks/queue_throughput.py);
      storage   what nightly syncs and the daily maintenance leave in result storage and
                the ledger index, night after night (benchmarks/storage_growth.py).
    The report (benchmarks/report.py) is printed and, with `--markdown PATH`, written there
    with a chart next to it (benchmarks/chart.py) and, after the figures, the hand-written
    benchmarks/PROFILE.md: where the time goes, from sampling profiles. Every process started
    is stopped on the way out, failure and Ctrl-C included; what was measured before a
    failure is still shown.

How to run
    make bench                                   # everything, to benchmarks/RESULTS.md (+ .png)
    .venv/bin/python -m benchmarks --quick --repeat 1       # a smoke run of every suite
    .venv/bin/python -m benchmarks --only breaker queue --repeat 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

from benchmarks.chart import draw
from benchmarks.processes import BenchmarkError, sigterm_as_interrupt
from benchmarks.report import commands, report
from benchmarks.tables import Section
from benchmarks.whole_process import (
    DEFAULT_RECORDS,
    FLOOR_CODE,
    FLOW_ARGS,
    IMPORTS,
    INDEX_ENV,
    PAGE_SIZE,
    PROGRAMS,
    QUICK_RECORDS,
    Bench,
)

SUITES = ("ledger", "breaker", "queue", "storage")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument(
        "--records",
        type=int,
        nargs="+",
        metavar="N",
        help="ledger suite: record counts, one fresh sandbox each (default: 0 10000 100000 "
        "1000000)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=SUITES, metavar="SUITE", help=", ".join(SUITES)
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 10000 records, 3 syncs in a row, 60 queue items",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each program (median)")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="also write the report")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a child may take")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="start each run at once, without waiting for the server to go quiet first",
    )
    args = parser.parse_args(argv)
    if args.quick and args.records:
        parser.error("--quick and --records exclude each other")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.records = sorted(set(QUICK_RECORDS if args.quick else args.records or DEFAULT_RECORDS))
    args.only = [suite for suite in SUITES if suite in (args.only or SUITES)]
    if "ledger" not in args.only:
        args.records = []
    return args


def run_suites(bench: Bench, args: argparse.Namespace, sections: list[Section]) -> None:
    from benchmarks.breaker import QUICK_RUNS, RUNS, measure_breaker
    from benchmarks.queue_throughput import ITEMS, QUICK_ITEMS, measure_queue
    from benchmarks.storage_growth import GROW, NIGHTS, QUICK, RECORDS, measure_storage

    if "ledger" in args.only:
        bench.import_floor()
        for records in args.records:
            bench.size(records)
    if "breaker" in args.only:
        sections.append(measure_breaker(bench, QUICK_RUNS if args.quick else RUNS))
    if "queue" in args.only:
        sections.append(measure_queue(bench, QUICK_ITEMS if args.quick else ITEMS, args.repeat))
    if "storage" in args.only:
        sections.append(measure_storage(bench, *(QUICK if args.quick else (NIGHTS, RECORDS, GROW))))


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="bench-"))
    settings = {
        "PREFECT_HOME": str(home),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    # Before anything imports prefect, whose settings are read once, at import.
    os.environ.update(settings)
    from deployments.stack import start_server

    print(f"Working directory: {home}", file=sys.stderr, flush=True)
    server = None
    failed: BaseException | None = None
    bench = Bench(home, {}, args.repeat, args.timeout, settle=not args.no_settle)
    sections: list[Section] = []
    try:
        with sigterm_as_interrupt():
            try:
                server = start_server(home)
                bench.server_pgid = server.process.pid  # start_server: a session of its own
                os.environ["PREFECT_API_URL"] = server.api_url
                bench.env = {**os.environ, **settings, "PREFECT_API_URL": server.api_url}
                run_suites(bench, args, sections)
            except (BenchmarkError, KeyboardInterrupt) as exc:
                failed = exc
            except Exception as exc:  # a bug or a broken stack: still report what was measured
                traceback.print_exc()
                failed = exc
            finally:
                if server is not None:
                    server.stop()
    except KeyboardInterrupt as exc:  # a second one while stopping
        failed = exc

    api_url = server.api_url if server else "<none>"
    cmds = commands(api_url, FLOOR_CODE, FLOW_ARGS, INDEX_ENV, IMPORTS)
    text = report(bench.results, PROGRAMS, cmds, args, False, sections, PAGE_SIZE)
    print(text)
    if args.markdown:
        text = report(bench.results, PROGRAMS, cmds, args, True, sections, PAGE_SIZE)
        if bench.results:  # the chart is of the ledger suite
            chart = args.markdown.with_suffix(".png")
            draw(bench.results, chart, PROGRAMS, PAGE_SIZE)
            text += f"\n![Time and peak memory against the record count]({chart.name})\n"
        profile = Path(__file__).with_name("PROFILE.md")  # by hand: where the time goes
        args.markdown.write_text(text + ("\n" + profile.read_text() if profile.exists() else ""))
        print(f"\nWritten to {args.markdown}")
    if failed is not None:
        what = "interrupted" if isinstance(failed, KeyboardInterrupt) else "FAILED"
        print(f"\nBenchmark {what}: {failed}", file=sys.stderr)
        print(f"Logs kept in {home}", file=sys.stderr)
        return 1
    if args.keep:
        print(f"Logs kept in {home}", file=sys.stderr)
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
