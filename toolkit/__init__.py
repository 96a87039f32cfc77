"""The toolkit: each resilience mechanism written once, used by every flow.

- `toolkit.retry`: which failures are transient; Prefect retry settings built on it; retries
  and backoff outside tasks; the one-line summary of a failure.
- `toolkit.breaker` (with `breaker_store`, `breaker_announce`, `breaker_scripts/`): a circuit
  breaker shared by every run and worker, its state in Redis.
- `toolkit.idempotency`: deterministic business keys and Idempotency-Key values.
- `toolkit.state`: schema-versioned checkpoints in Prefect's result store, migrated on read.
- `toolkit.ledger_index`: what each ledger holds (record ids by batch), an outbox, a lock;
  on `toolkit.database` (SQLite or PostgreSQL) and `toolkit.database_lock`.
- `toolkit.stream_queue`: a work queue on Redis Streams (leases, reclaim, dead letters).
- `toolkit.degradation`, `toolkit.alerts`: ending Degraded or Failed, and telling a person.
- `toolkit.approval`: pausing for a person's typed decision.
- `toolkit.callbacks`: signed webhooks from state hooks, and their verification.
- `toolkit.report`, `toolkit.terminal`: what a run shows in the UI and on a terminal.
- `toolkit.services`, `toolkit.config`, `toolkit.cli`: block loading, settings, parameters.
"""
