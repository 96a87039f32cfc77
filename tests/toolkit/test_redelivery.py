"""The re-delivery decision, round by round, with hand-built run states (no server, no clock).

Times are seconds on the caller's clock; every queue starts at 0 with `stuck_after_seconds`
10, `max_deliveries` 3 and `timeout_seconds` 100. A state object seen again in a later round
is the same state (no progress); a new object is a new state.
"""

from __future__ import annotations

from uuid import uuid4

from prefect.client.schemas.objects import State
from prefect.states import (
    AwaitingRetry,
    Cancelled,
    Completed,
    Crashed,
    Failed,
    Pending,
    Running,
    Scheduled,
)

from toolkit.redelivery import Action, Done, GiveUp, Queue, Redeliver, Rules, decide, is_queued

RULES = Rules(stuck_after_seconds=10, max_deliveries=3, timeout_seconds=100)


def queue_of(count: int) -> Queue:
    return Queue.start([(f"item-{n}", uuid4()) for n in range(count)], now=0.0)


def observe(queue: Queue, now: float, *states: State | None) -> tuple[Queue, list[Action]]:
    """One round: the i-th open item's run is in the i-th state."""
    observed = {entry.run_id: state for entry, state in zip(queue.open, states, strict=True)}
    return decide(queue, observed, now, RULES)


def keys(queue: Queue) -> list[str]:
    return [entry.key for entry in queue.open]


def test_a_completed_run_is_done_and_leaves_the_queue() -> None:
    queue = queue_of(2)
    first = queue.open[0]

    queue, actions = observe(queue, 1.0, Completed(), Running())

    assert actions == [Done("item-0", first.run_id, 1)]
    assert keys(queue) == ["item-1"]


def test_done_counts_the_deliveries_it_took() -> None:
    queue = queue_of(1).redelivered("item-0", new_run := uuid4(), now=5.0)

    _, actions = observe(queue, 6.0, Completed())

    assert actions == [Done("item-0", new_run, 2)]


def test_failed_and_cancelled_runs_are_set_aside_with_their_message_and_not_retired() -> None:
    queue = queue_of(2)
    run_ids = queue.run_ids()

    queue, actions = observe(queue, 1.0, Failed(message="RejectedItem: HTTP 422"), Cancelled())

    assert actions == [
        GiveUp("item-0", run_ids[0], 1, "RejectedItem: HTTP 422", retire=False),
        GiveUp("item-1", run_ids[1], 1, "Cancelled", retire=False),
    ]
    assert queue.open == ()


def test_a_started_run_with_no_new_state_for_stuck_after_is_redelivered() -> None:
    queue = queue_of(1)
    running = Running()
    queue, _ = observe(queue, 1.0, running)  # first seen: its clock starts

    queue, actions = observe(queue, 11.0, running)
    assert actions == []  # exactly stuck_after: not yet

    queue, actions = observe(queue, 11.5, running)
    assert actions == [
        Redeliver("item-0", queue.open[0].run_id, 2, "no new state for 10 s (Running)", True)
    ]
    assert keys(queue) == ["item-0"]  # open, until the caller records the new delivery


def test_each_new_state_restarts_the_clock() -> None:
    queue = queue_of(1)
    queue, _ = observe(queue, 1.0, Pending())
    queue, _ = observe(queue, 8.0, Running())  # progress

    queue, actions = observe(queue, 17.0, retrying := AwaitingRetry())  # progress again
    assert actions == []
    queue, actions = observe(queue, 26.0, retrying)
    assert actions == []

    queue, actions = observe(queue, 27.5, retrying)
    assert [(a.key, a.reason) for a in actions if isinstance(a, Redeliver)] == [
        ("item-0", "no new state for 10 s (AwaitingRetry)")
    ]


def test_awaiting_retry_is_not_waiting_in_the_queue() -> None:
    assert is_queued(Scheduled())
    assert not is_queued(AwaitingRetry())  # waits inside its worker
    assert not is_queued(None)


def test_a_crashed_run_is_redelivered_at_once_and_not_crashed_again() -> None:
    queue = queue_of(1)

    queue, actions = observe(queue, 0.5, Crashed(message="worker lost"))

    assert actions == [
        Redeliver("item-0", queue.open[0].run_id, 2, "its run crashed: worker lost", False)
    ]


def test_after_max_deliveries_a_stuck_item_is_given_up_and_its_run_retired() -> None:
    queue = queue_of(2)
    for n in (1, 2):  # two re-deliveries: three deliveries in all
        queue = queue.redelivered("item-0", uuid4(), now=float(n))
        queue = queue.redelivered("item-1", uuid4(), now=float(n))
    running = Running()
    queue, _ = observe(queue, 3.0, running, None)
    stuck_id, crashed_id = queue.run_ids()

    queue, actions = observe(queue, 14.0, running, Crashed(message="worker lost"))

    assert actions == [
        GiveUp(
            "item-0",
            stuck_id,
            3,
            "no new state for 10 s (Running), after 3 deliveries",
            retire=True,
        ),
        GiveUp("item-1", crashed_id, 3, "its run crashed: worker lost, after 3 deliveries", False),
    ]
    assert queue.open == ()


def test_scheduled_runs_waiting_their_turn_behind_ours_have_no_clock() -> None:
    """Only the first of ours in line may be stuck there (held by a dead or full worker)."""
    queue = queue_of(4)
    running, waiting = Running(), [Scheduled() for _ in range(3)]

    queue, actions = observe(queue, 1.0, running, *waiting)
    queue, actions = observe(queue, 11.5, Running(), *waiting)

    assert [(a.key, a.reason) for a in actions] == [("item-1", "still queued after 10 s")]
    assert actions[0] == Redeliver("item-1", queue.open[1].run_id, 2, actions[0].reason, True)


def test_a_scheduled_run_overtaken_by_a_later_one_is_stuck_from_when_it_was_overtaken() -> None:
    """A queue is first in, first out: a later item out of the queue means an earlier one still
    Scheduled was pushed to a worker that has not started it. (item-1 ahead of it in line
    makes progress each round, and the others run: only item-2 is judged here.)"""
    queue = queue_of(4)
    waiting, last = Scheduled(), Scheduled()
    queue, _ = observe(queue, 0.0, Running(), Scheduled(), waiting, last)
    queue, actions = observe(queue, 40.0, Running(), Scheduled(), waiting, last)
    assert actions == []  # waiting its turn: no clock, however long

    queue, actions = observe(queue, 50.0, Running(), Scheduled(), waiting, Running())
    assert actions == []  # overtaken by item-3 now

    queue, actions = observe(queue, 60.0, Running(), Scheduled(), waiting, Running())
    assert actions == []  # 10 s since it was overtaken, not 60 s since it was submitted

    queue, actions = observe(queue, 60.5, Running(), Scheduled(), waiting, Running())
    assert [(a.key, a.reason) for a in actions] == [("item-2", "still queued after 10 s")]


def test_a_redelivered_item_goes_to_the_back_of_the_queue_with_a_fresh_clock() -> None:
    queue = queue_of(3)
    scheduled = [Scheduled() for _ in range(3)]
    queue, _ = observe(queue, 0.0, Running(), *scheduled[1:])
    queue, actions = observe(queue, 10.5, Running(), *scheduled[1:])
    assert [a.key for a in actions] == ["item-1"]  # first in line for too long
    new_run = uuid4()

    queue = queue.redelivered("item-1", new_run, now=11.0)

    moved = queue.open[1]
    assert (moved.run_id, moved.deliveries, moved.seq, moved.since) == (new_run, 2, 3, 11.0)
    assert queue.next_seq == 4
    # item-2 is first in line now; item-1's new run waits behind it, with no clock.
    queue, _ = observe(queue, 11.0, Running(), again := Scheduled(), scheduled[2])
    queue, actions = observe(queue, 21.5, Running(), again, scheduled[2])
    assert [a.key for a in actions] == ["item-2"]


def test_a_run_that_cannot_be_found_is_never_stuck() -> None:
    queue = queue_of(1)

    queue, actions = observe(queue, 99.0, None)

    assert actions == [] and keys(queue) == ["item-0"]


def test_at_the_overall_timeout_everything_open_is_given_up_instead_of_redelivered() -> None:
    queue = queue_of(3)
    running = Running()
    queue, _ = observe(queue, 1.0, running, None, Crashed(message="lost"))
    run_ids = queue.run_ids()

    queue, actions = observe(queue, 100.5, running, None, Completed())

    assert actions == [
        GiveUp("item-0", run_ids[0], 1, "no final state within 100 s (last: Running)", False),
        GiveUp("item-1", run_ids[1], 1, "no final state within 100 s (last: unknown)", False),
        Done("item-2", run_ids[2], 1),
    ]
    assert queue.open == ()
