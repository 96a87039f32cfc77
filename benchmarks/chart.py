"""The whole-process benchmark's chart: time and peak memory against the record count.

Scenario
    A table says how fast each program was at each size; whether time grows linearly and
    memory stays flat is seen at a glance on a chart.

Solution
    `draw` plots, for every program, its median wall time and its median peak RSS against
    the record count (a program measured at one size is a lone point; the axes of time are
    logarithmic, zero records at the left edge), and where a page's time goes for the floor
    and the cold flagship at the largest size (benchmarks/report.py, `per_page`), and saves
    a PNG. matplotlib is in the
    project's `bench` extra, not in its runtime dependencies: `make bench` installs it.

How to run
    Part of `make bench` (`--markdown PATH` writes the chart next to it, as PATH.png).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.processes import Series
from benchmarks.report import PHASES, per_page


def draw(results: list[Series], path: Path, programs: tuple[str, ...], page_size: int) -> None:
    """Save the chart of `results` as the PNG `path` (`programs` as for report.tables)."""
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    programs: dict[str, list[Series]] = {}
    for series in results:
        if series.records is not None and series.runs:
            programs.setdefault(series.program, []).append(series)
    figure, (times, memory, pages) = plt.subplots(1, 3, figsize=(18, 4.5))
    for program, measured in programs.items():
        measured.sort(key=lambda s: s.records or 0)
        records = [s.records or 0 for s in measured]
        style = {"marker": "o", "label": program, "linestyle": "-" if len(measured) > 1 else ""}
        times.plot(records, [s.seconds for s in measured], **style)
        memory.plot(records, [s.rss_mib for s in measured], **style)
    sizes = sorted({s.records or 0 for measured in programs.values() for s in measured})
    for axes, label in ((times, "wall time, s (median)"), (memory, "peak RSS, MiB (median)")):
        axes.set_xscale("symlog", linthresh=10_000)
        axes.set_xticks(sizes, [f"{size:,}" for size in sizes])
        axes.minorticks_off()
        axes.set_xlabel("records")
        axes.set_ylabel(label)
        axes.grid(True, which="both", alpha=0.3)
    times.set_yscale("log")
    times.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    memory.set_ylim(bottom=0)
    times.legend(fontsize="small")
    draw_breakdown(pages, per_page(results, programs, page_size))
    figure.suptitle("Every program as a whole process (make bench)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_breakdown(axes: Any, measured: list[tuple[int, str, dict[str, float]]]) -> None:
    """Stacked bars: where a page's time goes, floor and flagship, at the largest size."""
    if not measured:
        axes.set_axis_off()
        return
    largest = max(records for records, _, _ in measured)
    rows = [(program, ms) for records, program, ms in measured if records == largest]
    labels, left = [program for program, _ in rows], [0.0] * len(rows)
    for phase in [*PHASES, "rest"]:
        widths = [max(ms[phase], 0.0) for _, ms in rows]  # noise can make the rest negative
        axes.barh(labels, widths, left=left, label=phase)
        left = [start + width for start, width in zip(left, widths, strict=True)]
    axes.set_xlabel(f"ms per page, {largest:,} records (wall time of the working thread)")
    axes.legend(fontsize="small", loc="lower right")
    axes.grid(True, axis="x", alpha=0.3)
