"""One consumer's handling of a delivered item, in this process, against the session's real
Redis and the sandbox ledger: processed, refused, or set aside unrun after too many
deliveries. Consumers as processes, dying mid-item, are tests/flows/test_message_queue.py."""

from __future__ import annotations

import uuid

import pytest

from sandbox.server import Sandbox
from toolkit.stream_queue import StreamQueue

pytestmark = pytest.mark.usefixtures("sandbox_blocks")


@pytest.fixture
def queue(stream_queue: StreamQueue) -> StreamQueue:
    return stream_queue


def deliver(queue: StreamQueue, malformed: bool = False, max_deliveries: int = 3):
    from flows.message_queue_items import build_items

    (item,) = build_items(1, 5, f"mq-{uuid.uuid4().hex[:6]}", [0] if malformed else [])
    body = {"item": item.model_dump(mode="json"), "ledger_api": "sandbox-ledger"}
    queue.submit([body], reply_to="replies", max_deliveries=max_deliveries)
    (delivery,) = queue.take("me", count=1, lease_ms=60_000, block_ms=10)
    return item, delivery


def replies(queue: StreamQueue) -> list[dict]:
    return [reply for _, reply in queue.replies("replies", after="0-0", block_ms=10)]


def test_a_processed_item_is_answered_and_its_result_stored(
    queue: StreamQueue, sandbox: Sandbox
) -> None:
    from flows.message_queue import read_result
    from flows.message_queue_worker import handle

    item, delivery = deliver(queue)

    reply = handle(queue, delivery)

    assert (reply.status, reply.deliveries) == ("processed", 1)
    assert replies(queue) == [reply.model_dump()]
    assert read_result(item.item_id).batch_id == item.batch.batch_id  # from result storage
    assert sandbox.counters()["ledger"]["applied"] == 1
    assert queue.client.xlen(queue.name) == 0 and not queue.client.exists(queue.dead_letters)


def test_a_refused_item_is_set_aside_with_the_ledgers_reason(
    queue: StreamQueue, sandbox: Sandbox
) -> None:
    from flows.message_queue_worker import handle

    _, delivery = deliver(queue, malformed=True)

    reply = handle(queue, delivery)

    assert reply.status == "set-aside" and "422" in reply.error, reply
    assert reply.task_run_id  # it ran, as a task run of its own
    assert queue.client.xlen(queue.dead_letters) == 1
    assert sandbox.counters()["ledger"]["applied"] == 0


def test_an_item_delivered_too_often_is_set_aside_without_running(
    queue: StreamQueue, sandbox: Sandbox
) -> None:
    import dataclasses

    from flows.message_queue_worker import handle

    _, delivery = deliver(queue, max_deliveries=1)
    again = dataclasses.replace(delivery, deliveries=2)  # as XAUTOCLAIM counts a second one

    reply = handle(queue, again)

    assert (reply.status, reply.task_run_id) == ("set-aside", "")
    assert "delivered 2 times, at most 1" in reply.error
    assert queue.client.xlen(queue.dead_letters) == 1
    assert sandbox.counters()["ledger"]["requests"] == 0


def test_an_entry_that_is_no_work_item_is_set_aside_naming_the_field(
    queue: StreamQueue, sandbox: Sandbox
) -> None:
    from flows.message_queue_worker import handle

    queue.ensure_group()
    queue.client.xadd(queue.name, {"body": '{"item": {"item_id": "x"}}', "reply_to": "replies"})
    (delivery,) = queue.take("me", count=1, lease_ms=60_000, block_ms=10)

    reply = handle(queue, delivery)

    assert (reply.item_id, reply.status) == ("x", "set-aside")
    assert "not a work item" in reply.error and "batch" in reply.error, reply.error
    assert queue.client.xlen(queue.name) == 0 and queue.client.xlen(queue.dead_letters) == 1
    assert sandbox.counters()["ledger"]["requests"] == 0
