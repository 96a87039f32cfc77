"""Re-delivery of queued work: which open items are done, set aside, delivered again, given up.

Scenario
    A producer hands items to Prefect task workers (`Task.delay`) and waits for each to end.
    Prefect 3.9.1 never gives a dead worker's task run to another worker (flows/message_queue.py,
    "DELIVERY GUARANTEE"), so the producer has to notice an item that stopped moving, deliver
    it again, and know when to stop trying. Those rules decide what happens to every item, so
    they should be testable without a server, a worker or a clock.

Solution
    `decide(queue, states, now, rules)` is the whole decision, a pure function of what the
    producer tracks (`Queue`: each open item's current delivery, its position in the server's
    queue, when its clock started), the states it has just read of those deliveries' task runs
    (`None`: not found), and the time. It returns the queue as it now stands and the actions:
    - `Done`: the run Completed; the caller reads its result.
    - `GiveUp`: the item is set aside with its error: its run Failed or was Cancelled (a poison
      item, or transient retries used up); it is stuck and has had `max_deliveries`
      deliveries; or it is still open `timeout_seconds` after the start.
    - `Redeliver`: the item is stuck, and the caller delivers it again, then records the new
      delivery's run with `Queue.redelivered` (which puts it at the back of the queue).
    `retire` on an action says the run is not final: the caller ends it (marks it Crashed), so
    that nothing waits on a run that has been replaced or given up.

    Stuck means, with `stuck_after_seconds` as S:
    - its run Crashed (a worker that dies gracefully, or a zombie detector, says so);
    - its run started (any state but a plain Scheduled: Pending, Running, AwaitingRetry) and
      has had no new state for S;
    - its run is still Scheduled for S after it became suspect: the server's queue is first in,
      first out, so a run still Scheduled behind the `frontier` (the latest queue position of
      ours seen out of the queue) was pushed to a worker that has not started it (one that
      died holding it, or a live one waiting for a free slot), and the first of ours still in
      line waits at most for a free slot. Any other Scheduled run waits its turn: no clock.
    Every new state of a run restarts its clock.

How to run
    queue = Queue.start([(item_id, future.task_run_id), ...], now=time.monotonic())
    rules = Rules(stuck_after_seconds=60, max_deliveries=3, timeout_seconds=600)
    while queue.open:
        queue, actions = decide(queue, read_states(queue.run_ids()), time.monotonic(), rules)
        ...  # apply them; after each re-delivery: queue = queue.redelivered(key, new_run_id, now)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from uuid import UUID

from prefect.client.schemas.objects import State, StateType


@dataclass(frozen=True)
class Rules:
    stuck_after_seconds: float
    max_deliveries: int
    timeout_seconds: float  # from Queue.started


@dataclass(frozen=True)
class Open:
    """An item handed to the queue and not yet resolved."""

    key: str  # the item's own id
    run_id: UUID  # the task run of its current delivery
    seq: int  # position in the queue: submission order, renewed by each re-delivery
    since: float  # when its current state was first seen, or its clock started
    state_id: UUID | None = None
    deliveries: int = 1
    suspect: bool = False  # a Scheduled run whose clock is running


@dataclass(frozen=True)
class Queue:
    open: tuple[Open, ...]
    started: float
    next_seq: int
    frontier: int = -1  # the latest queue position of ours seen out of the queue

    @classmethod
    def start(cls, submitted: Iterable[tuple[str, UUID]], now: float) -> Queue:
        """Items just submitted, in submission order (the server's queue order)."""
        entries = tuple(
            Open(key=key, run_id=run_id, seq=n, since=now)
            for n, (key, run_id) in enumerate(submitted)
        )
        return cls(open=entries, started=now, next_seq=len(entries))

    def run_ids(self) -> list[UUID]:
        return [entry.run_id for entry in self.open]

    def redelivered(self, key: str, run_id: UUID, now: float) -> Queue:
        """The item delivered again as `run_id`: one delivery more, at the back of the queue."""
        moved = [
            replace(
                e,
                run_id=run_id,
                seq=self.next_seq,
                since=now,
                state_id=None,
                deliveries=e.deliveries + 1,
                suspect=False,
            )
            if e.key == key
            else e
            for e in self.open
        ]
        return replace(self, open=tuple(moved), next_seq=self.next_seq + 1)


@dataclass(frozen=True)
class Done:
    key: str
    run_id: UUID
    deliveries: int


@dataclass(frozen=True)
class GiveUp:
    key: str
    run_id: UUID
    deliveries: int
    error: str
    retire: bool


@dataclass(frozen=True)
class Redeliver:
    key: str
    run_id: UUID
    delivery: int  # the number of the delivery to come
    reason: str
    retire: bool


Action = Done | GiveUp | Redeliver


def is_queued(state: State | None) -> bool:
    """Waiting in the server's queue. AwaitingRetry is Scheduled-type too, but it waits inside
    a worker, which will run it again itself."""
    return state is not None and state.type == StateType.SCHEDULED and state.name == "Scheduled"


def decide(
    queue: Queue, states: Mapping[UUID, State | None], now: float, rules: Rules
) -> tuple[Queue, list[Action]]:
    """What becomes of each open item, given its run's state just read (see the module doc)."""
    stuck_after = rules.stuck_after_seconds
    seen: list[tuple[Open, State | None]] = []
    frontier = queue.frontier
    for entry in queue.open:
        state = states.get(entry.run_id)
        if state is not None and state.id != entry.state_id:
            entry = replace(entry, state_id=state.id, since=now, suspect=False)
        if state is not None and not is_queued(state):
            frontier = max(frontier, entry.seq)
        seen.append((entry, state))
    first_in_line = min((e.seq for e, s in seen if is_queued(s)), default=None)

    actions: list[Action] = []
    kept: list[Open] = []
    for entry, state in seen:
        reason = ""
        if state is not None and state.is_completed():
            actions.append(Done(entry.key, entry.run_id, entry.deliveries))
            continue
        if state is not None and state.is_crashed():
            reason = f"its run crashed: {state.message}"
        elif state is not None and state.is_final():
            error = state.message or state.name or "failed"
            actions.append(GiveUp(entry.key, entry.run_id, entry.deliveries, error, retire=False))
            continue
        elif is_queued(state):
            if entry.seq < frontier or entry.seq == first_in_line:
                if not entry.suspect:
                    entry = replace(entry, suspect=True, since=now)
                if now - entry.since > stuck_after:
                    reason = f"still queued after {stuck_after:g} s"
        elif state is not None and now - entry.since > stuck_after:
            reason = f"no new state for {stuck_after:g} s ({state.name})"
        action = _stuck_or_late(entry, state, reason, now, queue.started, rules)
        if action is None:
            kept.append(entry)
        else:
            actions.append(action)
            if isinstance(action, Redeliver):
                kept.append(entry)  # still open, until the caller records its new delivery
    return replace(queue, open=tuple(kept), frontier=frontier), actions


def _stuck_or_late(
    entry: Open, state: State | None, reason: str, now: float, started: float, rules: Rules
) -> GiveUp | Redeliver | None:
    """For an item that is not final (or Crashed): deliver it again, give up on it, or wait."""
    retire = state is not None and not state.is_final()
    if reason and entry.deliveries >= rules.max_deliveries:
        error = f"{reason}, after {entry.deliveries} deliveries"
        return GiveUp(entry.key, entry.run_id, entry.deliveries, error, retire)
    if now - started > rules.timeout_seconds:  # a re-delivery now would not be waited for
        last = state.name if state is not None else "unknown"
        error = f"no final state within {rules.timeout_seconds:g} s (last: {last})"
        return GiveUp(entry.key, entry.run_id, entry.deliveries, error, retire=False)
    if reason:
        return Redeliver(entry.key, entry.run_id, entry.deliveries + 1, reason, retire)
    return None
