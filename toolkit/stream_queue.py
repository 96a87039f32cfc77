"""A work queue on Redis Streams: every item reaches a live consumer, dead consumers included.

Scenario
    Producers anywhere submit work items; consumers on many machines take them. A consumer
    may die holding items, so an item must go to another consumer once its holder is gone;
    an item that kills every consumer it reaches ("poison") must stop coming back; and a
    slow but live consumer must keep what it holds.

Solution
    One Redis stream per queue, read by one consumer group. Redis Streams rather than
    Prefect's background task runs (`.delay()`): in Prefect 3.9.1 their queue lives in the
    memory of the API process that scheduled the run (upstream #21218, open), so with several
    API replicas an item submitted through one is invisible to task workers subscribed to
    another, and a run whose worker died is never handed to another (see flows/message_queue.py).
    A consumer group is the broker's own answer to both: each entry goes to one consumer and
    stays in the group's pending-entries list until acknowledged; XAUTOCLAIM hands an entry
    idle for longer than the lease to another consumer and counts its deliveries. Redis, not
    RabbitMQ: both profiles already run it (circuit breakers), so it adds no service. redis-py
    is the client; what this module adds is small:
    - `submit` XADDs each item's body with where to reply and its most deliveries;
    - `take` reclaims expired entries first (XAUTOCLAIM), then reads new ones (XREADGROUP),
      each with its delivery count (XPENDING);
    - `renew` resets the idle time of the entries a live consumer holds (XCLAIM to itself),
      so a long item keeps its lease; a dead consumer renews nothing;
    - `finish` replies and acknowledges in one MULTI, then deletes the entry: the stream holds
      only what is still to do; `set_aside` also copies the entry to the dead-letter stream
      `<name>:dead`, for a person to fix and resubmit.
    `verdict` (pure) decides what a delivery is for: processing, or setting aside once it has
    been delivered more often than allowed (its consumers died each time).

DELIVERY GUARANTEE: at least once. An entry whose consumer stalls past its lease without
renewing (a frozen machine) is processed again elsewhere: effects must be idempotent.

How to run
    queue = StreamQueue(redis.Redis.from_url(url, decode_responses=True), "work")
    queue.submit([{"n": 1}], reply_to="work:replies:1", max_deliveries=3)
    for delivery in queue.take("worker-1", count=10, lease_ms=60_000): queue.finish(delivery, {})
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis

GROUP = "consumers"
REPLY_TTL_SECONDS = 86_400
"""A reply stream nobody reads (its producer died) is gone a day after its last reply."""

Verdict = Literal["process", "set-aside"]


def verdict(deliveries: int, max_deliveries: int) -> Verdict:
    """Process a delivery, or set its item aside: delivered more than `max_deliveries` times,
    every earlier consumer died holding it."""
    return "set-aside" if deliveries > max_deliveries else "process"


@dataclass(frozen=True)
class Delivery:
    """One entry handed to one consumer: its body, where to reply, how often it was delivered."""

    entry_id: str
    body: dict[str, Any]
    reply_to: str
    deliveries: int
    max_deliveries: int

    @property
    def verdict(self) -> Verdict:
        return verdict(self.deliveries, self.max_deliveries)


class StreamQueue:
    """The stream `name` and its consumer group, on a client with `decode_responses=True`."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client = client
        self.name = name
        self.dead_letters = f"{name}:dead"

    def ensure_group(self) -> None:
        """Create the stream and its group if missing (every consumer may call it)."""
        try:
            self.client.xgroup_create(self.name, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def join(self, consumer: str) -> None:
        """Make `consumer` known to the group before its first item (`consumers` lists it)."""
        self.ensure_group()
        self.client.xgroup_createconsumer(self.name, GROUP, consumer)

    def submit(self, bodies: Iterable[dict[str, Any]], reply_to: str, max_deliveries: int) -> int:
        """Add every body as an entry (one round trip); how many were added."""
        self.ensure_group()
        pipe = self.client.pipeline(transaction=False)
        count = 0
        for body in bodies:
            fields = {"body": json.dumps(body), "reply_to": reply_to, "max": max_deliveries}
            pipe.xadd(self.name, fields)  # type: ignore[arg-type]
            count += 1
        pipe.execute()
        return count

    def take(
        self, consumer: str, count: int, lease_ms: int, block_ms: int = 1000
    ) -> list[Delivery]:
        """Up to `count` entries for `consumer`: first those whose holder let the lease run out
        (idle for `lease_ms`), then new ones, waiting up to `block_ms` for them (0: not at all)."""
        # [next start, entries, deleted ids] (Redis 7; Redis 6.2 leaves out the last)
        claimed = self.client.xautoclaim(self.name, GROUP, consumer, lease_ms, "0-0", count)[1]
        entries = [entry for entry in claimed if entry[1]]  # an entry deleted meanwhile: no fields
        if len(entries) < count:
            answer = self.client.xreadgroup(
                GROUP,
                consumer,
                {self.name: ">"},
                count=count - len(entries),
                block=block_ms or None,  # BLOCK 0 would wait forever
            )
            entries += [entry for _, stream_entries in answer or [] for entry in stream_entries]
        return [self._delivery(entry_id, fields) for entry_id, fields in entries]

    def renew(self, consumer: str, entry_ids: Sequence[str]) -> None:
        """Reset the idle time of those of `entry_ids` that `consumer` still holds: their
        lease starts again. One another consumer took over meanwhile stays with it."""
        if not entry_ids:
            return
        pending = self.client.xpending_range(
            self.name, GROUP, min(entry_ids), max(entry_ids), len(entry_ids), consumername=consumer
        )
        held = [entry["message_id"] for entry in pending if entry["message_id"] in entry_ids]
        if held:
            self.client.xclaim(self.name, GROUP, consumer, 0, held, justid=True)

    def finish(self, delivery: Delivery, reply: dict[str, Any]) -> None:
        """Reply, acknowledge and delete the entry, all or nothing."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(delivery.reply_to, {"reply": json.dumps(reply)})
        pipe.expire(delivery.reply_to, REPLY_TTL_SECONDS)
        pipe.xack(self.name, GROUP, delivery.entry_id)
        pipe.xdel(self.name, delivery.entry_id)
        pipe.execute()

    def set_aside(self, delivery: Delivery, reply: dict[str, Any]) -> None:
        """Copy the entry to the dead-letter stream with why, then `finish` it."""
        fields = {"body": json.dumps(delivery.body), "reply": json.dumps(reply)}
        self.client.xadd(self.dead_letters, fields)  # type: ignore[arg-type]
        self.finish(delivery, reply)

    def replies(self, reply_to: str, after: str, block_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """Replies in `reply_to` after entry id `after` ('0-0': all), waiting up to `block_ms`."""
        answer = self.client.xread({reply_to: after}, block=block_ms or None)
        return [
            (entry_id, json.loads(fields["reply"]))
            for _, entries in answer or []
            for entry_id, fields in entries
        ]

    def consumers(self) -> list[str]:
        """The names of the consumers that joined the group (or were handed an entry)."""
        try:
            return sorted(c["name"] for c in self.client.xinfo_consumers(self.name, GROUP))
        except redis.ResponseError:  # no stream or group yet
            return []

    def _delivery(self, entry_id: str, fields: dict[str, str]) -> Delivery:
        pending = self.client.xpending_range(self.name, GROUP, entry_id, entry_id, 1)
        try:
            body = json.loads(fields.get("body", ""))
        except json.JSONDecodeError:
            body = {}
        return Delivery(
            entry_id=entry_id,
            # An entry another program added may lack fields: its consumer sets it aside.
            body=body if isinstance(body, dict) else {"item": body},
            reply_to=fields.get("reply_to") or f"{self.name}:unanswerable",
            deliveries=int(pending[0]["times_delivered"]) if pending else 1,
            max_deliveries=int(fields.get("max") or 1),
        )
