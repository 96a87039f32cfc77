"""The message queue on the scale stack: two producers, each through one API replica, three
consumers through the balancer, one of them SIGKILLed mid-item, results in the object store.

Both producers are `python -m flows.message_queue` processes, as a user runs them, one with
replica 0's URL and one with replica 1's: every good item of both is applied exactly once
(counted at the sandbox ledger), each poison item is set aside with the ledger's reason, the
killed consumer's items are taken over (the ledger replays what it had applied) and every
result is read back by its producer from the object store, where the consumers' tasks put it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal

import pytest

from deployments.scale import ScaleStack
from sandbox.server import Sandbox
from sandbox.verify import check_ledger
from tests.helpers import ROOT
from tests.helpers.polling import poll_until
from tests.scale.helpers import stored_objects

ITEMS = 20
POISON = 3


def spawn(command: list[str], api_url: str, log) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        env={**os.environ, "PREFECT_API_URL": api_url},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.timeout(600)
def test_items_through_both_replicas_are_processed_once_with_a_consumer_killed(
    scale_stack: ScaleStack, tmp_path
) -> None:
    from blocks import HttpService
    from flows.message_queue_items import build_items, item_queue

    sandbox = Sandbox(n_records=10, seed=7).start()  # its ledger only
    consumers: list[subprocess.Popen[bytes]] = []
    try:
        HttpService(base_url=sandbox.urls["ledger"], read_timeout=10.0).save(
            "mqs-ledger", overwrite=True
        )
        sandbox.set_faults("ledger", delay_after_apply=1.0)  # items in flight at the kill
        for n in range(2):
            log = (tmp_path / f"consumer-{n}.log").open("wb")
            command = ["flows.message_queue_worker", "--limit", "3", "--lease", "3"]
            consumers.append(spawn(command, scale_stack.api_url, log))

        def joined() -> bool:
            names = item_queue().consumers()
            return all(any(n.endswith(f"-{c.pid}") for n in names) for c in consumers)

        poll_until(joined, 60, 0.5, "both consumers joined")
        producers = {}
        for label, api_url in zip(("mqs-a", "mqs-b"), scale_stack.api_urls, strict=True):
            command = ["flows.message_queue", f"items={ITEMS}", f"label={label}"]
            command += [f"malformed=[{POISON}]", "ledger_api=mqs-ledger", "timeout_seconds=300"]
            producers[label] = spawn(command, api_url, (tmp_path / f"{label}.log").open("wb"))
        poll_until(lambda: sandbox.counters()["ledger"]["applied"] >= 3, 120, 0.05, "loading")
        os.killpg(consumers[0].pid, signal.SIGKILL)  # a consumer machine lost mid-item
        consumers[0].wait()

        for label, producer in producers.items():
            assert producer.wait(timeout=400) == 1  # 1: an item was set aside, the poison
            output = (tmp_path / f"{label}.log").read_text()
            assert f"processed {ITEMS - 1} of {ITEMS} items" in output, output[-3000:]
            assert f"set aside {label}-{POISON:04d}: " in output and "422" in output

        items = [i for label in ("mqs-a", "mqs-b") for i in build_items(ITEMS, 5, label)]
        good = [item for item in items if not item.item_id.endswith(f"-{POISON:04d}")]
        expected = {e.record_id: Decimal(e.amount_eur) for i in good for e in i.batch.entries}
        ledger = sandbox.ledger_state()
        check = check_ledger(expected, ledger)
        assert check.exact, str(check)
        assert set(ledger["applications_ever"].values()) == {1}  # nothing applied twice
        assert sandbox.counters()["ledger"]["replayed"] >= 1  # the dead consumer's, taken over
        keys = set(stored_objects())
        assert {f"results/message-queue/{item.item_id}.json" for item in good} <= keys
    finally:
        for consumer in consumers:
            if consumer.poll() is None:
                os.killpg(consumer.pid, signal.SIGTERM)
                consumer.wait(timeout=60)
        sandbox.stop()
