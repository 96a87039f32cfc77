"""benchmarks/report.py: the ratios and notes it derives from the measured series."""

from __future__ import annotations

from benchmarks.processes import Measured, Series
from benchmarks.report import breakdown, per_page, tables

PROGRAMS = ("floor", "cold", "no-op", "resume", "naive")


def series(records: int | None, program: str, seconds: float, mib: int = 100) -> Series:
    return Series(records, program, [Measured(seconds, mib * 1024)])


def test_ratios_growth_and_the_fixed_cost_of_a_sync() -> None:
    results = [
        series(None, "import prefect", 1.0),
        series(None, "import flows.ledger_sync", 1.5),
        series(0, "floor", 0.2, 40),
        series(0, "cold", 3.0),
        series(0, "no-op", 3.0),
        series(100_000, "floor", 1.0, 40),
        series(100_000, "cold", 8.0, 110),
        series(100_000, "no-op", 2.0),
        series(100_000, "resume", 1.0),
    ]
    _, ratios, notes = tables(results, PROGRAMS)
    assert ratios[1] == ["100,000", "8.0x", "4.0x", "12%", "n/a", "+0.50", "2.8x"]
    assert (
        "fixed cost: cold of zero records 3.00 s against import prefect 1.00 s: 3.0x (+2.00 s)"
        in notes
    )
    assert (
        "time growth, cold: beyond the zero-record run, per 100,000 records: 5.0 s at 100,000"
        in notes
    )
    assert "memory growth, cold: 1.1x (100 MiB at 0 records -> 110 MiB at 100,000)" in notes


def test_a_pages_time_by_phase_the_rest_and_the_difference_to_the_floor() -> None:
    floor_zero, cold_zero = series(0, "floor", 0.2), series(0, "cold", 1.5)
    floor, cold = series(100_000, "floor", 1.2), series(100_000, "cold", 3.5)
    floor.phases = [{"GET wait": 0.6, "validate": 0.2, "POST wait": 0.1}]
    cold.phases = [
        {"GET wait": 0.2, "validate": 0.2, "checkpoint": 0.1, "claim": 0.4, "POST wait": 0.6},
        {"GET wait": 0.4, "validate": 0.2, "checkpoint": 0.1, "claim": 0.2, "POST wait": 0.6},
    ]  # medians: GET wait 0.3, claim 0.3
    results = [floor_zero, cold_zero, floor, cold]

    rows = breakdown(results, PROGRAMS, page_size=500)  # 200 pages

    assert rows == [
        ["100,000", "floor", "3.00", "1.00", "-", "-", "-", "0.50", "-", "0.50", "5.00", "-"],
        [
            "100,000",
            "cold",
            "1.50",
            "1.00",
            "0.50",
            "1.50",
            "-",
            "3.00",
            "-",
            "2.50",
            "10.00",
            "+5.00",
        ],
    ]
    assert per_page([floor, cold], PROGRAMS, 500) == []  # no zero-record run to stand on
