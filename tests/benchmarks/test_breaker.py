"""benchmarks/breaker.py: the table it makes of the three series (no processes started)."""

from __future__ import annotations

from benchmarks.breaker import BREAKER, NO_BREAKER, UP, ModeRuns, breaker_section
from benchmarks.processes import Measured


def series(mode: str, seconds: list[float], primary: list[int], fallback: int) -> ModeRuns:
    runs = [Measured(s, 100_000) for s in seconds]
    return ModeRuns(mode, runs, primary, [fallback] * len(seconds))


def test_the_table_counts_calls_and_time_lost_against_the_primary_up_series() -> None:
    section = breaker_section(
        [
            series(UP, [3.0, 3.0, 3.0], [1, 1, 1], 0),
            series(NO_BREAKER, [16.0, 16.0, 17.0], [9, 9, 9], 1),
            series(BREAKER, [4.0, 3.0, 3.0], [5, 0, 0], 1),
        ]
    )
    rows = {row[0]: row for row in section.rows}
    assert rows[UP][2:4] == ["3", "1 1 1"] and rows[UP][-1] == "-"
    assert rows[NO_BREAKER][2] == "27" and rows[NO_BREAKER][-1] == "+40.0"
    assert rows[BREAKER][2:5] == ["5", "5 0 0", "3"] and rows[BREAKER][-1] == "+1.0"
    assert section.notes[-1].startswith("the breaker: 5 calls to the down primary instead of 27")
    assert "(5.4x fewer); +1.0 s lost against the baseline instead of +40.0 s" in section.notes[-1]
