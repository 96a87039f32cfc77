"""The Redis Streams work queue: `verdict` alone, then the queue on the session's real Redis
(streams of each test's own): delivery to one consumer, reclaim after a dead holder's lease,
renewal by a live one, replies with acknowledgement, dead letters."""

from __future__ import annotations

import time

import pytest

from toolkit.stream_queue import StreamQueue, verdict


@pytest.fixture
def queue(stream_queue: StreamQueue) -> StreamQueue:
    return stream_queue


def test_verdict_sets_an_item_aside_only_past_its_most_deliveries() -> None:
    assert verdict(1, 3) == "process"
    assert verdict(3, 3) == "process"
    assert verdict(4, 3) == "set-aside"
    assert verdict(2, 1) == "set-aside"


def test_each_entry_goes_to_one_consumer(queue: StreamQueue) -> None:
    assert queue.submit(({"n": n} for n in range(5)), reply_to="replies", max_deliveries=3) == 5

    first = queue.take("a", count=3, lease_ms=60_000, block_ms=10)
    second = queue.take("b", count=10, lease_ms=60_000, block_ms=10)

    assert [d.body["n"] for d in first] == [0, 1, 2]
    assert [d.body["n"] for d in second] == [3, 4]
    assert all(d.deliveries == 1 and d.reply_to == "replies" for d in first + second)
    queue.join("c")
    assert queue.take("c", count=10, lease_ms=60_000, block_ms=10) == []
    assert queue.consumers() == ["a", "b", "c"]


def test_a_dead_holders_entries_go_to_another_consumer_counting_deliveries(
    queue: StreamQueue,
) -> None:
    queue.submit([{"n": 1}], reply_to="replies", max_deliveries=1)
    (held,) = queue.take("dies", count=1, lease_ms=200, block_ms=10)

    assert queue.take("live", count=1, lease_ms=200, block_ms=10) == []  # its lease runs
    time.sleep(0.3)
    (again,) = queue.take("live", count=1, lease_ms=200, block_ms=10)

    assert (again.entry_id, again.deliveries, again.verdict) == (held.entry_id, 2, "set-aside")


def test_a_live_holder_keeps_its_entries_by_renewing_them(queue: StreamQueue) -> None:
    queue.submit([{"n": 1}], reply_to="replies", max_deliveries=3)
    (held,) = queue.take("slow", count=1, lease_ms=300, block_ms=10)

    for _ in range(4):  # 0.6 s in all, twice the lease, renewed every 0.15 s
        time.sleep(0.15)
        queue.renew("slow", [held.entry_id])
        assert queue.take("other", count=1, lease_ms=300, block_ms=0) == []


def test_finish_replies_and_removes_the_entry(queue: StreamQueue) -> None:
    queue.submit([{"n": 1}, {"n": 2}], reply_to="replies", max_deliveries=3)
    first, second = queue.take("a", count=2, lease_ms=100, block_ms=10)

    queue.finish(first, {"n": 1, "status": "processed"})
    queue.set_aside(second, {"n": 2, "status": "set-aside"})
    time.sleep(0.2)

    replies = queue.replies("replies", after="0-0", block_ms=10)
    assert [reply for _, reply in replies] == [
        {"n": 1, "status": "processed"},
        {"n": 2, "status": "set-aside"},
    ]
    assert queue.replies("replies", after=replies[-1][0], block_ms=10) == []
    assert queue.take("b", count=10, lease_ms=100, block_ms=10) == []  # nothing to reclaim
    assert queue.client.xlen(queue.name) == 0  # done entries are deleted
    (dead,) = queue.client.xrange(queue.dead_letters)
    assert dead[1]["body"] == '{"n": 2}'
    assert 0 < queue.client.ttl("replies") <= 86_400


def test_renewing_never_takes_back_what_another_consumer_took_over(queue: StreamQueue) -> None:
    queue.submit([{"n": 1}], reply_to="replies", max_deliveries=3)
    (held,) = queue.take("stalled", count=1, lease_ms=100, block_ms=10)
    time.sleep(0.2)
    (taken,) = queue.take("other", count=1, lease_ms=100, block_ms=10)

    queue.renew("stalled", [held.entry_id])  # it wakes up and renews what it held

    pending = queue.client.xpending_range(queue.name, "consumers", "-", "+", 10)
    assert [(p["message_id"], p["consumer"]) for p in pending] == [(taken.entry_id, "other")]
