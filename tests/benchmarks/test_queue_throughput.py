"""benchmarks/queue_throughput.py: the table it makes of producer runs (no processes started)."""

from __future__ import annotations

from benchmarks.processes import Measured
from benchmarks.queue_throughput import QueueRun, queue_section


def run(seconds: float, producer_cpu: float, workers_cpu: float, server_cpu: float) -> QueueRun:
    measured = Measured(seconds, 100_000, server_cpu=server_cpu, cpu_seconds=producer_cpu)
    return QueueRun(measured, workers_cpu)


def test_items_per_second_and_cpu_per_item_are_medians_over_the_items() -> None:
    section = queue_section(
        {
            1: [run(20.0, 6.0, 8.0, 4.0), run(30.0, 7.0, 9.0, 5.0), run(25.0, 9.5, 8.5, 4.5)],
            2: [run(10.0, 6.0, 8.0, 4.0)],
        },
        items=50,
    )
    one, two = section.rows
    assert one == ["1", "3", "25.00", "20.00-30.00", "2.0", "140", "170", "90"]
    assert two[:5] == ["2", "1", "10.00", "10.00-10.00", "5.0"]
    assert section.notes[-1] == "2 workers against 1: 2.50x the items per second"
