"""Tasks that talk to the records, rates and ledger services (../shared/upstream-api.md).

Each task takes an `httpx.Client` handed out by an `HttpService` block, so it knows nothing
of URLs or credentials. Retries are Prefect's, for transient failures only
(`toolkit.retry.UPSTREAM_RETRY`); the tasks are not cached themselves (`NO_CACHE`): what a
sync must not redo is guarded by its checkpoints and by the ledger's Idempotency-Key.
"""

from __future__ import annotations

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction, get_transaction

from flows.ledger.models import Batch, LedgerReceipt, Rates, RecordsPage
from toolkit.retry import UPSTREAM_RETRY, checked

UPSTREAM_TASK = {**UPSTREAM_RETRY, "cache_policy": NO_CACHE, "persist_result": False}


@task(**UPSTREAM_TASK, task_run_name="fetch-page")
def fetch_page(client: httpx.Client, cursor: str | None, limit: int) -> RecordsPage:
    params: dict[str, str | int] = {"limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    return RecordsPage.model_validate(checked(client.get("/records", params=params)).json())


@task(**UPSTREAM_TASK)
def fetch_rates(client: httpx.Client) -> Rates:
    return Rates.model_validate(checked(client.get("/rates", params={"base": "EUR"})).json())


@task(**UPSTREAM_TASK, task_run_name="load-batch-{batch.batch_id}")
def load_batch(client: httpx.Client, batch: Batch) -> LedgerReceipt:
    """POST a batch under its Idempotency-Key; a replay (200) means it was already applied."""
    txn = get_transaction()
    if txn is not None:  # a function, because txn.get() deep-copies values (a client can't be)
        txn.set("compensate", lambda: compensate_batch(client, batch.batch_id))
    response = checked(
        client.post(
            "/ledger/batches",
            json=batch.model_dump(mode="json"),
            headers={"Idempotency-Key": batch.idempotency_key},
        )
    )
    body = response.json()
    return LedgerReceipt(
        batch_id=body["batch_id"], accepted=body["accepted"], replayed=response.status_code == 200
    )


@task(**UPSTREAM_TASK, task_run_name="compensate-batch-{batch_id}")
def compensate_batch(client: httpx.Client, batch_id: str) -> None:
    """DELETE a batch: the ledger reverses it and releases its Idempotency-Key."""
    checked(client.delete(f"/ledger/batches/{batch_id}"))


@load_batch.on_rollback
def _compensate_on_rollback(txn: Transaction) -> None:
    txn.get("compensate")()
