"""The queue's work items and their task, run in this process against the sandbox ledger.

The queue as a whole, with task workers in subprocesses, is tests/flows/test_message_queue.py.
"""

from __future__ import annotations

import httpx
import pytest

from sandbox.server import Sandbox

pytestmark = pytest.mark.usefixtures("sandbox_blocks")


def test_the_same_arguments_build_the_same_items_and_poison_only_where_told() -> None:
    from flows.message_queue_items import build_items

    items = build_items(3, 2, "mq-build", malformed=[1])

    assert items == build_items(3, 2, "mq-build", malformed=[1])
    assert [item.item_id for item in items] == ["mq-build-0000", "mq-build-0001", "mq-build-0002"]
    assert ["," in e.amount_eur for item in items for e in item.batch.entries] == [
        False,
        False,
        True,
        False,
        False,
        False,
    ]


def test_an_item_delivered_twice_is_applied_once(sandbox: Sandbox) -> None:
    from flows.message_queue_items import ItemResult, build_items, process_item

    (item,) = build_items(1, 5, "mq-twice")

    first = ItemResult.model_validate(process_item.fn(item))
    second = ItemResult.model_validate(process_item.fn(item))

    assert (first.batch_id, first.accepted, first.replayed) == (item.batch.batch_id, 5, False)
    assert (second.batch_id, second.replayed) == (item.batch.batch_id, True)
    counters = sandbox.counters()["ledger"]
    assert (counters["applied"], counters["replayed"]) == (1, 1)


def test_a_poison_item_is_rejected_with_the_ledgers_reason(sandbox: Sandbox) -> None:
    from flows.message_queue_items import RejectedItem, build_items, process_item

    (poison,) = build_items(1, 5, "mq-poison", malformed=[0])

    with pytest.raises(RejectedItem) as rejected:
        process_item.fn(poison)

    assert str(rejected.value) == (
        "the ledger refused it: HTTP 422: entries[0].amount_eur is not a decimal string"
    )
    assert sandbox.counters()["ledger"]["applied"] == 0


def test_a_transient_failure_is_raised_as_it_is_for_the_tasks_retries(sandbox: Sandbox) -> None:
    from flows.message_queue_items import build_items, process_item

    sandbox.set_faults("ledger", force_status=[503])
    (item,) = build_items(1, 5, "mq-transient")

    with pytest.raises(httpx.HTTPStatusError) as failed:
        process_item.fn(item)

    assert failed.value.response.status_code == 503
