"""The storage benchmark's table: what each night added, per record, and the growth ratios."""

from __future__ import annotations

from benchmarks.storage_growth import Night, section


def test_a_night_that_adds_nothing_reads_zero_bytes_per_record() -> None:
    nights = [Night(1000, 2, 2048, 4096), Night(1100, 2, 2048, 4096), Night(1200, 3, 3248, 8192)]

    table = section(nights, grow=100)

    assert [row[4] for row in table.rows] == ["2.05", "0.00", "1.00"]
    assert table.notes[-1] == "last night / first: stored 1.59x, index 2.00x, records 1.20x"
