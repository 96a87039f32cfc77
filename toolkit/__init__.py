"""The toolkit: each resilience mechanism written once, used by every flow.

- `toolkit.retry`: which upstream failures are transient, and Prefect retry settings built on it.
- `toolkit.idempotency`: deterministic business keys and Idempotency-Key values.
- `toolkit.state`: schema-versioned checkpoints in Prefect's result store, migrated on read.
- `toolkit.ledger_index`: what each ledger holds (record ids by batch), an outbox, a lock.
- `toolkit.database`, `toolkit.database_lock`: the database under it (SQLite or PostgreSQL)
  and a lock in it that dies with its holder.
- `toolkit.services`: loading HttpService block documents with errors that name the parameter.
- `toolkit.report`: the run report (markdown, table and progress artifacts).
"""
