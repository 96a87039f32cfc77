"""The message queue: consumers in real subprocesses, the session's real Redis, Prefect server
and sandbox ledger.

Every claim is counted at the sandbox ledger: each good item applied exactly once, the
poison item never, and no record's batch ever applied twice, even when a consumer is
SIGKILLed while the ledger holds POSTs it applied but has not answered yet. The queue's
primitives are tested in tests/toolkit/test_stream_queue.py; one consumer's handling of an
item in tests/flows/test_message_queue_worker.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest

from sandbox.server import Sandbox
from sandbox.verify import check_ledger
from tests.helpers import ROOT
from tests.helpers.polling import poll_until

pytestmark = pytest.mark.usefixtures("sandbox_blocks")

ITEMS = 12
POISON = 5


class Consumers:
    """Consumer processes of this test, each in a process group of its own."""

    def __init__(self, api_url: str, result_storage: Path, logs: Path) -> None:
        self.env = {
            **os.environ,
            "PREFECT_API_URL": api_url,
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(result_storage),
        }
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, limit: int = 3, lease: float = 60) -> subprocess.Popen[bytes]:
        log = (self.logs / f"consumer-{len(self.processes)}.log").open("wb")
        command = [sys.executable, "-m", "flows.message_queue_worker"]
        command += ["--limit", str(limit), "--lease", str(lease)]
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def wait_joined(self, *processes: subprocess.Popen[bytes], timeout: float = 30) -> None:
        """Until the queue lists each process as a consumer."""
        from flows.message_queue_items import item_queue

        def all_joined() -> bool:
            for process in processes:
                assert process.poll() is None, f"consumer {process.pid} exited, see {self.logs}"
            joined = item_queue().consumers()
            return all(any(c.endswith(f"-{p.pid}") for c in joined) for p in processes)

        poll_until(all_joined, timeout=timeout, what="every consumer joined")

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def consumers(prefect_server: str, result_storage: Path, tmp_path: Path) -> Iterator[Consumers]:
    started = Consumers(prefect_server, result_storage, tmp_path)
    yield started
    for process in started.processes:
        started.kill(process)


def produce(label: str, **parameters):
    from flows.message_queue import produce_and_gather

    return produce_and_gather(items=ITEMS, malformed=[POISON], label=label, **parameters)


def assert_exact_once(sandbox: Sandbox, label: str, summary) -> None:
    """Good items processed with their results, the poison set aside, nothing applied twice."""
    from flows.message_queue_items import build_items

    items = build_items(ITEMS, 5, label, [POISON])
    poison = items[POISON]
    good = [item for item in items if item is not poison]
    assert summary.processed == [item.item_id for item in good]
    assert [entry.item_id for entry in summary.set_aside] == [poison.item_id]
    error = summary.set_aside[0].error
    assert "422" in error and "amount_eur is not a decimal string" in error, error
    for item in good:
        result = summary.results[item.item_id]
        assert (result.batch_id, result.accepted) == (item.batch.batch_id, 5)

    expected = {e.record_id: Decimal(e.amount_eur) for item in good for e in item.batch.entries}
    ledger = sandbox.ledger_state()
    check = check_ledger(expected, ledger)
    assert check.exact, str(check)
    assert set(ledger["applications_ever"].values()) == {1}
    counters = sandbox.counters()["ledger"]
    assert counters["applied"] == len(good)
    assert counters["by_status"].get("422") == 1  # the poison item: never retried


def consumer_pids(summary) -> set[int]:
    return {int(result.worker.rsplit("-", 1)[1]) for result in summary.results.values()}


def assert_results_stored(result_storage: Path, summary) -> None:
    """Each processed item's result is a file in the test's result storage, at its key, written
    by the consumer's task run."""
    from prefect.client.orchestration import get_client

    from flows.message_queue_items import result_key

    with get_client(sync_client=True) as client:
        for result in summary.results.values():
            state = client.read_task_run(UUID(result.task_run_id)).state
            assert state is not None and state.is_completed()
            assert (result_storage / result_key(result.item_id)).is_file()


def test_two_consumers_process_every_item_once_and_set_the_poison_aside(
    sandbox: Sandbox, consumers: Consumers, result_storage: Path
) -> None:
    # Slow and flaky: both consumers take items, and transient failures are retried.
    sandbox.set_faults("ledger", slow_rate=1.0, slow_seconds=0.3, error_rate=0.2)
    first, second = consumers.start(), consumers.start()
    consumers.wait_joined(first, second)

    summary = produce("mq-two", timeout_seconds=60)

    assert_exact_once(sandbox, "mq-two", summary)
    assert_results_stored(result_storage, summary)
    assert summary.redelivered == {}
    assert consumer_pids(summary) == {first.pid, second.pid}
    statuses = sandbox.counters()["ledger"]["by_status"]
    assert any(status.startswith("5") for status in statuses), "no transient failure injected"


def test_consumer_sigkilled_mid_item_its_items_are_taken_over_and_applied_once(
    sandbox: Sandbox, consumers: Consumers, result_storage: Path
) -> None:
    """The queue test: a consumer dies holding items the ledger applied but has not answered."""
    sandbox.set_faults("ledger", delay_after_apply=1.0)
    doomed = consumers.start(lease=2)
    consumers.wait_joined(doomed)
    survivors: list[subprocess.Popen[bytes]] = []
    failures: list[BaseException] = []

    def applied() -> bool:
        return sandbox.counters()["ledger"]["applied"] >= 1

    def kill_mid_item_then_start_another() -> None:
        try:
            poll_until(applied, timeout=30, interval=0.02, what="a first application")
            time.sleep(0.1)  # inside the 1 s the ledger waits before answering the applied POSTs
        except BaseException as exc:  # told in the test's thread, below
            failures.append(exc)
        finally:
            consumers.kill(doomed)
            survivors.append(consumers.start(lease=2))

    killer = threading.Thread(target=kill_mid_item_then_start_another)
    killer.start()
    try:
        summary = produce("mq-kill", timeout_seconds=60)
    finally:
        killer.join()
    assert not failures, failures

    assert_exact_once(sandbox, "mq-kill", summary)
    assert_results_stored(result_storage, summary)
    # The dead consumer's items were delivered again and hit the Idempotency-Key replay.
    assert summary.redelivered, "nothing was delivered twice"
    assert set(summary.redelivered.values()) == {2}
    assert sandbox.counters()["ledger"]["replayed"] >= 1
    replayed = [r for r in summary.results.values() if r.replayed]
    assert replayed and {r.item_id for r in replayed} <= set(summary.redelivered)
    assert consumer_pids(summary) == {survivors[0].pid}


@pytest.mark.parametrize(
    ("name", "value"),
    [("ledger_api", "no-such-block"), ("items", 0), ("max_deliveries", 0), ("label", "A!")],
)
def test_bad_parameters_fail_by_name_before_anything_is_queued(
    sandbox: Sandbox, name: str, value: object
) -> None:
    from flows.message_queue_items import item_queue

    queue = item_queue()
    before = queue.client.xlen(queue.name) if queue.client.exists(queue.name) else 0
    with pytest.raises(Exception, match=name):
        produce("mq-bad", **{name: value})
    assert (queue.client.xlen(queue.name) if queue.client.exists(queue.name) else 0) == before
