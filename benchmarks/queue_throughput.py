"""Benchmark: items per second through the message-queue pattern, with 1 and 2 consumers.

Scenario
    A producer submits work items (ledger batches) to the queue (a Redis stream); consumers
    in processes of their own run each as a Prefect task that POSTs it to the ledger
    (flows/message_queue.py). How many items per second go through, as a user runs it, and
    what does a second consumer add?

Solution
    One sandbox process for the ledger; then, `repeat` times for 1 and for 2 workers, side by
    side: the workers (`python -m flows.message_queue_worker --limit 10`, started first and
    waited for until the queue lists them, not timed: they are long-running services), then
    the producer `python -m flows.message_queue items=N label=...` as a whole process, timed
    from interpreter start to exit: it submits every item, gathers every result from result
    storage, and exits 0 only if none was set aside. The ledger is reset before each run and
    checked after it: every record of every item applied exactly once. Items per second is N
    over the producer's wall time, its fixed cost (imports, flow start and exit: about 3 s)
    included; the ratio is 2 workers against 1.

How to run
    Part of `make bench` (`python -m benchmarks`); on its own: `python -m benchmarks --only
    queue --repeat 1`.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.processes import (
    PROJECT_ROOT,
    BenchmarkError,
    Measured,
    SandboxProcess,
    group_cpu_seconds,
    run_beside_server,
)
from benchmarks.tables import Section
from benchmarks.whole_process import Bench

ITEMS, QUICK_ITEMS = 60, 20
RECORDS_PER_ITEM = 5
WORKER_LIMIT = 10
WORKER_COUNTS = (1, 2)
QUEUE_HEADERS = ["workers", "runs", "median s", "min-max s", "items/s"]
QUEUE_HEADERS += ["producer CPU ms/item", "workers CPU ms/item", "server CPU ms/item"]
WORKER_ARGS = ("--limit", str(WORKER_LIMIT))


def start_workers(count: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    """`count` task workers, each in a process group of its own, once the queue lists them.

    On any failure, Ctrl-C included, the workers started so far are stopped.
    """
    from flows.message_queue_items import item_queue

    workers: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(count):
            with (logs / f"worker-{i}.log").open("wb") as log:
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "flows.message_queue_worker", *WORKER_ARGS],
                        cwd=PROJECT_ROOT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 60
        while True:
            if any(worker.poll() is not None for worker in workers):
                raise BenchmarkError(f"a consumer exited at start; see {logs}")
            joined = item_queue().consumers()
            if all(any(c.endswith(f"-{p.pid}") for c in joined) for p in workers):
                return workers
            if time.monotonic() > deadline:
                raise BenchmarkError(f"the consumers did not join within 60 s; see {logs}")
            time.sleep(0.2)
    except BaseException:
        stop_workers(workers)
        raise


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


@dataclass
class QueueRun:
    producer: Measured
    workers_cpu: float  # CPU seconds of the consumers while the producer ran


def workers_cpu(workers: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds the workers have used so far (each is a process group of its own)."""
    return sum(group_cpu_seconds(worker.pid) or 0.0 for worker in workers)


def check_applied_once(sandbox: SandboxProcess, label: str, items: int, what: str) -> None:
    """Fail unless the ledger holds every record of every item exactly once, and nothing else."""
    net = sandbox.control("/ledger")["net_applications"]
    expected = {f"{label}-{i:04d}-{j:03d}" for i in range(items) for j in range(RECORDS_PER_ITEM)}
    wrong = {record_id: n for record_id, n in net.items() if n != 1}
    missing, extra = expected - set(net), set(net) - expected
    if wrong or missing or extra:
        raise BenchmarkError(
            f"{what}: {len(missing)} records missing, {len(extra)} unexpected, "
            f"{len(wrong)} applied other than once (e.g. {dict(list(wrong.items())[:3])})"
        )


def measure_queue(bench: Bench, items: int, repeat: int) -> Section:
    """Producer runs with 1 and with 2 warm consumers, as a table."""
    from deployments.stack import register_blocks, save_sandbox_blocks

    queue_dir = bench.home / "queue"
    queue_dir.mkdir()
    sandbox = SandboxProcess(0, bench.env, queue_dir / "sandbox.log")
    runs: dict[int, list[QueueRun]] = {count: [] for count in WORKER_COUNTS}
    try:
        register_blocks()
        save_sandbox_blocks(sandbox.urls)
        for i in range(repeat):
            for count in WORKER_COUNTS:
                run_dir = queue_dir / f"workers-{count}-{i}"
                run_dir.mkdir()
                label = f"bench-{count}w-{i}"
                sandbox.control("/reset", {})
                workers = start_workers(count, bench.env, run_dir)
                try:
                    workers_before = workers_cpu(workers)
                    argv = [sys.executable, "-m", "flows.message_queue"]
                    argv += [f"items={items}", f"records_per_item={RECORDS_PER_ITEM}"]
                    argv += [f"label={label}"]
                    measured = run_beside_server(
                        argv,
                        bench.env,
                        run_dir / "producer.log",
                        bench.timeout,
                        bench.server_pgid,
                        bench.settle,
                    )
                    used = workers_cpu(workers) - workers_before
                finally:
                    stop_workers(workers)
                check_applied_once(sandbox, label, items, f"queue, {count} workers, run {i + 1}")
                runs[count].append(QueueRun(measured, used))
                print(
                    f"  queue, {items} items, {count} workers: {measured.seconds:.2f} s, "
                    f"{items / measured.seconds:.1f} items/s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        sandbox.stop()
    return queue_section(runs, items)


def queue_section(runs: dict[int, list[QueueRun]], items: int) -> Section:
    """The table: per worker count, the producer's time, items per second, and CPU per item."""
    rows = []
    rates = {}
    for count, done in runs.items():
        if not done:
            continue
        times = [run.producer.seconds for run in done]
        seconds = statistics.median(times)
        rates[count] = items / seconds

        def per_item(figures: list[float | None]) -> str:
            known = [f for f in figures if f is not None]
            return f"{statistics.median(known) / items * 1000:.0f}" if known else "-"

        rows.append(
            [
                str(count),
                str(len(done)),
                f"{seconds:.2f}",
                f"{min(times):.2f}-{max(times):.2f}",
                f"{rates[count]:.1f}",
                per_item([run.producer.cpu_seconds for run in done]),
                per_item([run.workers_cpu for run in done]),
                per_item([run.producer.server_cpu for run in done]),
            ]
        )
    notes = [
        "items/s: items over the producer's median wall time, its fixed cost included",
        "CPU ms per item: CPU time of the producer, of all consumers and of the Prefect "
        "server's processes while the producer ran, over the items (medians)",
    ]
    if 1 in rates and 2 in rates:
        notes.append(f"2 workers against 1: {rates[2] / rates[1]:.2f}x the items per second")
    return Section(
        title=f"Message queue: {items} items through 1 and 2 consumers",
        about=(
            f"`python -m flows.message_queue items={items} records_per_item={RECORDS_PER_ITEM}` "
            f"timed as a whole process, with consumers (`python -m flows.message_queue_worker "
            f"--limit {WORKER_LIMIT}`) started and joined before it; every record checked "
            "applied exactly once at the ledger after each run."
        ),
        headers=QUEUE_HEADERS,
        rows=rows,
        notes=notes,
    )
