"""The whole-process benchmark's report: its results as aligned text or as markdown.

Scenario
    The figures of benchmarks/whole_process.py are worth something only beside the machine,
    the versions and the exact commands that produced them; and the comparisons a reader is
    after (cold / floor, cold / no-op, resume / cold, naive / cold, what a no-op costs beyond
    its imports, how time and memory grow with the record count) should not be left to
    mental arithmetic.

Solution
    tables turns the Series into the results table (median, min-max, peak RSS, server CPU,
    wait, HTTP requests), the ratios and the notes; per_page and breakdown, where a page's
    time goes (the phases the floor and the flagship time themselves, toolkit/stopwatch.py,
    and the rest of their wall time per page); machine and commands say where and how it
    ran; report lays it all out as aligned text (plain_table) or markdown (markdown_table).
    The program names and commands come from benchmarks/whole_process.py as arguments, not as
    imports: that module imports this one, so an import of it from here would be a cycle. The
    other suites' tables (benchmarks/tables.py Sections) follow the ledger figures.

How to run
    Not on its own: `python -m benchmarks` prints the report, and with `--markdown PATH`
    writes it as markdown too.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchmarks.processes import PROJECT_ROOT, Series
from benchmarks.tables import Section, markdown_table, plain_table


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return done.stdout


def machine() -> list[tuple[str, str]]:
    cpuinfo = Path("/proc/cpuinfo")
    models = [
        line.split(":", 1)[1].strip()
        for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
        if line.startswith("model name")
    ]
    meminfo = Path("/proc/meminfo")
    mem = next(
        (
            f"{int(line.split()[1]) / 1024**2:.1f} GiB"
            for line in (meminfo.read_text().splitlines() if meminfo.exists() else [])
            if line.startswith("MemTotal:")
        ),
        "unknown",
    )
    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = git("status", "--porcelain", "--", "flows", "toolkit", "blocks", "sandbox")
    code = f"{PROJECT_ROOT} at {commit}" + (
        f", uncommitted changes: {', '.join(line[3:] for line in changed.splitlines())}"
        if changed
        else ", as committed"
    )
    return [
        ("nproc", str(len(os.sched_getaffinity(0)))),
        ("CPU", models[0] if models else platform.processor() or "unknown"),
        ("memory", mem),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("Prefect", package_version("prefect")),
        ("httpx", package_version("httpx")),
        ("flow code", code),
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]


def commands(
    api_url: str,
    floor_code: str,
    flow_args: list[str],
    index_env: str,
    imports: dict[str, list[str]],
) -> list[tuple[str, str]]:
    """Every command the benchmark ran, as a reader would type it to reproduce a figure."""
    from deployments.stack import prefect_cli

    py = sys.executable
    home = "<home>"
    return [
        (
            "every child",
            f"cwd {PROJECT_ROOT}; PREFECT_HOME={home} PREFECT_API_URL={api_url} "
            "PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_LOGGING_LEVEL=WARNING "
            f"PREFECT_RESULTS_LOCAL_STORAGE_PATH={home}/storage unless set below",
        ),
        (
            "server",
            f"{prefect_cli()} server start --host 127.0.0.1 --port <port> "
            "(deployments.stack.start_server, once)",
        ),
        ("sandbox", f"{py} -m sandbox --records <N> (one process per size, faults off)"),
        ("blocks", "deployments.stack.register_blocks() + save_sandbox_blocks(urls), per size"),
        ("floor", f"{py} -c {shlex.quote(floor_code)} '<sandbox urls json>'; POST /reset"),
        (
            "cold",
            f"POST /reset; PREFECT_RESULTS_LOCAL_STORAGE_PATH=<run>/storage "
            f"{index_env}=sqlite:///<run>/ledger-index.sqlite {shlex.join([py, *flow_args])} "
            "(<run> a fresh empty directory per repetition)",
        ),
        ("no-op", "the cold command again, same <run>, right after its cold run"),
        (
            "resume",
            "POST /reset; the cold command with a fresh <run>, SIGKILLed (its process group) "
            "once 90% of its batches are applied, not timed; then the cold command again",
        ),
        ("naive", f"POST /reset; {py} -m benchmarks.naive_prefect '<sandbox urls json>'"),
        *((program, shlex.join([py, *argv])) for program, argv in imports.items()),
    ]


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "n/a"


def tables(
    results: list[Series], programs: tuple[str, ...]
) -> tuple[list[list[str]], list[list[str]], list[str]]:
    """The results table, the ratios table and the notes; `programs`: floor, cold, no-op,
    resume, naive."""
    floor_program, cold_program, *_ = programs
    by = {(s.records, s.program): s for s in results if s.runs}
    rows = [
        [
            "-" if s.records is None else f"{s.records:,}",
            s.program,
            f"{s.seconds:.2f}",
            s.spread,
            f"{s.rss_mib:.0f}",
            "-" if s.server_cpu is None else f"{s.server_cpu:.2f}",
            "-" if s.settled is None else f"{s.settled:.1f}",
            s.requests or "-",
        ]
        for s in sorted(
            (s for s in results if s.runs), key=lambda s: (s.records is not None, s.records or 0)
        )
    ]
    sizes = sorted({s.records for s in results if s.records is not None and s.runs})
    imported = by.get((None, "import flows.ledger_sync"))
    ratios = []
    for records in sizes:
        floor, cold, noop, resume, naive = (by.get((records, p)) for p in programs)
        ratios.append(
            [
                f"{records:,}",
                ratio(cold.seconds, floor.seconds) if cold and floor else "n/a",
                ratio(cold.seconds, noop.seconds) if cold and noop else "n/a",
                f"{resume.seconds / cold.seconds:.0%}" if resume and cold else "n/a",
                ratio(naive.seconds, cold.seconds) if naive and cold else "n/a",
                f"{noop.seconds - imported.seconds:+.2f}" if noop and imported else "n/a",
                ratio(cold.rss_mib, floor.rss_mib) if cold and floor else "n/a",
            ]
        )
    notes = []
    for program in (cold_program, floor_program):
        measured = [by[(r, program)] for r in sizes if (r, program) in by]
        if len(measured) >= 2:
            small, large = measured[0], measured[-1]
            notes.append(
                f"memory growth, {program}: {ratio(large.rss_mib, small.rss_mib)} "
                f"({small.rss_mib:.0f} MiB at {small.records:,} records -> "
                f"{large.rss_mib:.0f} MiB at {large.records:,})"
            )
        else:
            notes.append(f"memory growth, {program}: n/a (one size measured)")
    zero_sync, bare = by.get((0, cold_program)), by.get((None, "import prefect"))
    if zero_sync and bare:  # the fixed cost of a sync, against Prefect's own import
        notes.append(
            f"fixed cost: {cold_program} of zero records {zero_sync.seconds:.2f} s against "
            f"import prefect {bare.seconds:.2f} s: {ratio(zero_sync.seconds, bare.seconds)} "
            f"({zero_sync.seconds - bare.seconds:+.2f} s)"
        )
    colds = [by[(r, cold_program)] for r in sizes if (r, cold_program) in by]
    if len(colds) > 1 and colds[0].records == 0:  # linear: the same time per record at any size
        zero = colds[0].seconds
        per = [f"{(c.seconds - zero) / c.records * 1e5:.1f} s at {c.records:,}" for c in colds[1:]]
        notes.append(
            f"time growth, {cold_program}: beyond the zero-record run, per 100,000 records: "
            + ", ".join(per)
        )
    return rows, ratios, notes


PHASES = ["GET wait", "validate", "checkpoint", "claim", "read batch", "POST wait"]
PHASES += ["record applied"]
"""The phases the flagship times itself in (flows/ledger, toolkit/stopwatch.py); the floor
times the ones it has."""


def per_page(
    results: list[Series], programs: tuple[str, ...], page_size: int
) -> list[tuple[int, str, dict[str, float]]]:
    """(records, program, ms per page by phase, with "rest" and "whole") for the floor and the
    cold flagship at each size above zero: each phase the median over the runs; the whole,
    the wall time beyond the program's own zero-record run; the rest, what no phase holds."""
    floor_program, cold_program, *_ = programs
    by = {(s.records, s.program): s for s in results if s.runs}
    found = []
    for records in sorted({s.records for s in results if s.records and s.runs}):
        pages = -(-records // page_size)
        for program in (floor_program, cold_program):
            series, zero = by.get((records, program)), by.get((0, program))
            if series is None or zero is None or not series.phases:
                continue
            ms = {
                p: statistics.median(run.get(p, 0.0) for run in series.phases) * 1e3 / pages
                for p in PHASES
            }
            ms["whole"] = (series.seconds - zero.seconds) * 1e3 / pages
            ms["rest"] = ms["whole"] - sum(ms[p] for p in PHASES)
            found.append((records, program, ms))
    return found


def breakdown(results: list[Series], programs: tuple[str, ...], page_size: int) -> list[list[str]]:
    """The rows of `per_page`; the flagship's row ends with its whole minus the floor's."""
    floor_program = programs[0]
    floors = {
        records: ms["whole"]
        for records, program, ms in per_page(results, programs, page_size)
        if program == floor_program
    }
    rows = []
    for records, program, ms in per_page(results, programs, page_size):
        above = (
            ms["whole"] - floors[records]
            if program != floor_program and records in floors
            else None
        )
        rows.append(
            [
                f"{records:,}",
                program,
                *(f"{ms[p]:.2f}" if ms[p] else "-" for p in PHASES),
                f"{ms['rest']:.2f}",
                f"{ms['whole']:.2f}",
                "-" if above is None else f"{above:+.2f}",
            ]
        )
    return rows


BREAKDOWN_HEADERS = ["records", "program", *(f"{p} ms" for p in PHASES), "rest ms"]
BREAKDOWN_HEADERS += ["per page ms", "above the floor ms"]
BREAKDOWN_LEGEND = (
    "Per page of records, wall time of the thread doing the work: waits for the next page "
    "(GET) and the next answer (POST) while they overlap the rest, validation, the page "
    "checkpoint, the index claim, reading a batch back and recording it applied; the rest "
    "is the per-page wall time (beyond the program's zero-record run) not in a phase."
)

RESULT_HEADERS = ["records", "program", "median s", "min-max s", "peak RSS MiB"]
RESULT_HEADERS += ["server CPU s", "waited s", "HTTP rec/rat/led"]
LEGEND = [
    "median s, min-max s: wall time of the whole process, interpreter start to exit",
    "peak RSS MiB: the child's own ru_maxrss (os.wait4); the server and sandbox not counted",
    "server CPU s: CPU time the Prefect server's processes used while the child ran",
    "waited s: before the child started, how long the server stayed busy (waited for quiet)",
    "HTTP rec/rat/led: requests to the records, rates (+fallback) and ledger services",
]
RATIO_HEADERS = ["records", "cold / floor", "cold / no-op", "resume / cold", "naive / cold"]
RATIO_HEADERS += ["no-op - import flows.ledger_sync (s)", "cold RSS / floor RSS"]


def report(
    results: list[Series],
    programs: tuple[str, ...],
    cmds: list[tuple[str, str]],
    args: argparse.Namespace,
    markdown: bool,
    sections: Sequence[Section] = (),
    page_size: int = 500,
) -> str:
    """The whole report; `programs` as for tables, `cmds` from commands, `args` as parsed.

    `sections`, the other benchmarks' tables, come after the ledger_sync figures.
    """
    rows, ratios, notes = tables(results, programs)
    phases = breakdown(results, programs, page_size)
    about = machine()
    title = (
        f"Whole-process benchmark: records {', '.join(f'{r:,}' for r in args.records)}, "
        f"repeat {args.repeat}, median of the repetitions"
    )
    settling = (
        "each run started once the server was quiet (under 10 % of a CPU for 1 s)"
        if not args.no_settle
        else "each run started at once, the server possibly still busy (--no-settle)"
    )
    if markdown:
        return "\n".join(
            [
                f"# {title}",
                "",
                markdown_table(RESULT_HEADERS, rows),
                "",
                *(f"- {line}" for line in [*LEGEND, settling]),
                "",
                markdown_table(RATIO_HEADERS, ratios),
                "",
                *(f"- {note}" for note in notes),
                "",
                "## Where the time of a page goes",
                "",
                markdown_table(BREAKDOWN_HEADERS, phases),
                "",
                f"- {BREAKDOWN_LEGEND}",
                "",
                *(section.render(markdown=True) for section in sections),
                "## Machine",
                "",
                *(f"- {name}: {value}" for name, value in about),
                "",
                "## Commands",
                "",
                *(f"- {name}: `{value}`" for name, value in cmds),
                "",
            ]
        )
    width = max(len(name) for name, _ in about + cmds)
    return "\n".join(
        [
            title,
            "",
            plain_table(RESULT_HEADERS, rows, left=2),
            *(f"  {line}" for line in [*LEGEND, settling]),
            "",
            plain_table(RATIO_HEADERS, ratios),
            "",
            *notes,
            "",
            "Where the time of a page goes:",
            plain_table(BREAKDOWN_HEADERS, phases, left=2),
            BREAKDOWN_LEGEND,
            "",
            *(section.render(markdown=False) + "\n" for section in sections),
            "Machine:",
            *(f"  {name:<{width}}  {value}" for name, value in about),
            "Commands:",
            *(f"  {name:<{width}}  {value}" for name, value in cmds),
        ]
    )
