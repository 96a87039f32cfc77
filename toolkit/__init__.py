"""The toolkit: each resilience mechanism written once, used by every flow.

- `toolkit.retry`: which upstream failures are transient, and Prefect retry settings built on it.
- `toolkit.idempotency`: deterministic business keys and Idempotency-Key values.
- `toolkit.state`: schema-versioned checkpoints in Prefect's result store, migrated on read.
- `toolkit.services`: loading HttpService block documents with errors that name the parameter.
- `toolkit.report`: the run report (markdown, table and progress artifacts).
"""
