"""The message queue: task workers in real subprocesses, a real Prefect server and ledger.

Every claim is counted at the sandbox ledger: each good item applied exactly once, the
poison item never, and no record's batch ever applied twice, even when a worker is SIGKILLed
while the ledger holds POSTs it applied but has not answered yet. The re-delivery decision
itself is unit-tested in tests/toolkit/test_redelivery.py; here, its I/O.
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
from uuid import UUID, uuid4

import pytest

from sandbox.server import Sandbox
from sandbox.verify import check_ledger
from tests.helpers import ROOT
from tests.helpers.polling import poll_until

pytestmark = pytest.mark.usefixtures("sandbox_blocks")

ITEMS = 12
POISON = 5


class Workers:
    """Task worker processes of this test, each in a process group of its own."""

    def __init__(self, api_url: str, result_storage: Path, logs: Path) -> None:
        self.env = {
            **os.environ,
            "PREFECT_API_URL": api_url,
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(result_storage),
        }
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, limit: int = 3) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.message_queue_worker", "--limit", str(limit)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def wait_subscribed(self, *processes: subprocess.Popen[bytes], timeout: float = 30) -> None:
        """Until the server lists each process as a task worker of process_item."""
        from flows.message_queue_items import live_task_workers, process_item

        def all_subscribed() -> bool:
            for process in processes:
                assert process.poll() is None, f"worker {process.pid} exited, see {self.logs}"
            live = live_task_workers(process_item.task_key)
            return all(any(w.endswith(f"-{p.pid}") for w in live) for p in processes)

        poll_until(all_subscribed, timeout=timeout, what="every worker subscribed")

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def workers(prefect_server: str, result_storage: Path, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(prefect_server, result_storage, tmp_path)
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


def worker_pids(summary) -> set[int]:
    return {int(result.worker.rsplit("-", 1)[1]) for result in summary.results.values()}


def assert_results_stored(result_storage: Path, summary) -> None:
    """Each processed item's result is a file in the test's result storage."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for result in summary.results.values():
            state = client.read_task_run(UUID(result.task_run_id)).state
            assert state is not None and state.is_completed()
            key = Path(state.data.storage_key)
            assert key.parent == result_storage and key.is_file()


def test_two_workers_process_every_item_once_and_set_the_poison_aside(
    sandbox: Sandbox, workers: Workers, result_storage: Path
) -> None:
    # Slow and flaky: both workers take items, and transient failures are retried.
    sandbox.set_faults("ledger", slow_rate=1.0, slow_seconds=0.3, error_rate=0.2)
    first, second = workers.start(), workers.start()
    workers.wait_subscribed(first, second)

    summary = produce("mq-two", timeout_seconds=40, stuck_after_seconds=10)

    assert_exact_once(sandbox, "mq-two", summary)
    assert_results_stored(result_storage, summary)
    assert summary.redelivered == {}
    assert worker_pids(summary) == {first.pid, second.pid}
    statuses = sandbox.counters()["ledger"]["by_status"]
    assert any(status.startswith("5") for status in statuses), "no transient failure injected"


def test_worker_sigkilled_mid_item_its_items_are_redelivered_and_applied_once(
    sandbox: Sandbox, workers: Workers, result_storage: Path
) -> None:
    """The queue test: a worker dies holding items the ledger applied but has not answered."""
    sandbox.set_faults("ledger", delay_after_apply=1.0)
    doomed = workers.start()
    workers.wait_subscribed(doomed)
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
            workers.kill(doomed)
            survivors.append(workers.start())

    killer = threading.Thread(target=kill_mid_item_then_start_another)
    killer.start()
    try:
        state = produce("mq-kill", timeout_seconds=45, stuck_after_seconds=3, return_state=True)
    finally:
        killer.join()
    assert not failures, failures
    summary = state.result()

    assert_exact_once(sandbox, "mq-kill", summary)
    assert_results_stored(result_storage, summary)
    # The dead worker's items were re-delivered and hit the Idempotency-Key replay.
    assert summary.redelivered, "nothing was re-delivered"
    assert sandbox.counters()["ledger"]["replayed"] >= 1
    replayed = [r for r in summary.results.values() if r.replayed]
    assert replayed and {r.item_id for r in replayed} <= set(summary.redelivered)
    assert worker_pids(summary) == {survivors[0].pid}
    # Each re-delivery is a new task run of the producer, and the run it replaced was Crashed.
    replaced = crashed_for_redelivery(state.state_details.flow_run_id)
    assert len(replaced) == sum(n - 1 for n in summary.redelivered.values()), replaced
    assert {r.task_run_id for r in summary.results.values()}.isdisjoint(replaced)


def crashed_for_redelivery(flow_run_id: UUID) -> set[str]:
    """Ids of the flow run's task runs that the producer marked Crashed to re-deliver them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        return {
            str(run.id)
            for run in runs
            if any(
                s.is_crashed() and (s.message or "").startswith("re-delivered: ")
                for s in client.read_task_run_states(run.id)
            )
        }


def test_a_run_is_retired_unless_it_has_finished(prefect_server: str) -> None:
    """The guard of a re-delivery: the server will not crash a finished run (its
    HandleTaskTerminalStateTransitions rule), so an item that has just ended is not delivered
    again; an unfinished one is marked Crashed, with the reason."""
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Failed, Running, Scheduled

    from flows.message_queue import retire_run
    from flows.message_queue_items import process_item

    with get_client(sync_client=True) as client:
        runs = {
            state.name: client.create_task_run(process_item, None, uuid4().hex, state=state).id
            for state in (Completed(), Failed(), Running(), Scheduled())
        }
        retired = {name: retire_run(client, run_id, "test") for name, run_id in runs.items()}
        after = {name: client.read_task_run(run_id).state for name, run_id in runs.items()}

    assert retired == {"Completed": False, "Failed": False, "Running": True, "Scheduled": True}
    assert [after[name].name for name in runs] == ["Completed", "Failed", "Crashed", "Crashed"]
    assert after["Running"].message == "test"


@pytest.mark.parametrize(
    ("name", "value"),
    [("ledger_api", "no-such-block"), ("items", 0), ("stuck_after_seconds", 0.1), ("label", "A!")],
)
def test_bad_parameters_fail_by_name_before_anything_is_queued(
    sandbox: Sandbox, name: str, value: object
) -> None:
    before = task_runs_on_server()
    with pytest.raises(Exception, match=name):
        produce("mq-bad", **{name: value})
    assert task_runs_on_server() == before


def task_runs_on_server() -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.request("POST", "/task_runs/count", json={}).json()
