"""The records, rates and ledger services (../shared/upstream-api.md): opened, and called.

`open_upstreams` loads the `HttpService` block documents a flow was given, all of them before
the first request (an unknown name stops the run by its parameter's name, before any side
effect), and opens one client per service for the flow's duration. The tasks take such a
client, so they know nothing of URLs or credentials. Retries are Prefect's, for transient
failures only (`toolkit.retry.UPSTREAM_RETRY`); the tasks are not cached themselves
(`NO_CACHE`): what a sync must not redo is guarded by its checkpoints, the ledger index and
the ledger's Idempotency-Key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.ledger.models import Batch, LedgerReceipt, RecordsPage
from toolkit.retry import UPSTREAM_RETRY, checked
from toolkit.services import load_service, load_services

UPSTREAM_TASK = {**UPSTREAM_RETRY, "cache_policy": NO_CACHE, "persist_result": False}


@dataclass(frozen=True)
class RatesSource:
    name: str
    base_url: str
    client: httpx.Client


@dataclass
class Upstreams:
    """Open clients of the services a flow named; a service it did not name is None."""

    records: httpx.Client | None = None
    ledger: httpx.Client | None = None
    rates_sources: list[RatesSource] = field(default_factory=list)
    records_url: str = ""
    ledger_url: str = ""


@contextmanager
def open_upstreams(
    *,
    records_api: str | None = None,
    rates_api: str | None = None,
    fallback_rates_api: str | None = None,
    ledger_api: str | None = None,
) -> Iterator[Upstreams]:
    """Clients for the named block documents (the parameters' names in errors), then closed."""
    named = {
        "records_api": records_api,
        "rates_api": rates_api,
        "fallback_rates_api": fallback_rates_api,
        "ledger_api": ledger_api,
    }
    services = load_services({name: block for name, block in named.items() if block})
    with ExitStack() as stack:
        clients = {name: stack.enter_context(s.client()) for name, s in services.items()}
        yield Upstreams(
            records=clients.get("records_api"),
            ledger=clients.get("ledger_api"),
            rates_sources=[
                RatesSource(label, services[name].base_url, clients[name])
                for label, name in (("primary", "rates_api"), ("fallback", "fallback_rates_api"))
                if name in clients
            ],
            records_url=services["records_api"].base_url if records_api else "",
            ledger_url=services["ledger_api"].base_url if ledger_api else "",
        )


def get_page(client: httpx.Client, cursor: str | None, limit: int) -> RecordsPage:
    """One GET of the records service, no retry: `fetch_page` (a task with Prefect's retries),
    or `call_upstream` around it where a task run per page costs more than the page."""
    params: dict[str, str | int] = {"limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    return RecordsPage.model_validate(checked(client.get("/records", params=params)).json())


@task(**UPSTREAM_TASK, task_run_name="fetch-page")
def fetch_page(client: httpx.Client, cursor: str | None, limit: int) -> RecordsPage:
    return get_page(client, cursor, limit)


class CursorLoop(Exception):
    """The records service handed out a cursor it had handed out before: its chain loops."""


def iter_pages(client: httpx.Client, limit: int) -> Iterator[RecordsPage]:
    """Every page of the current snapshot, one fetch at a time, each cursor from the last page;
    `CursorLoop` rather than looping if the service repeats a cursor (ledger_sync's walk does
    the same from its checkpoints: flows/ledger/plan.py)."""
    seen: set[str] = set()
    page = fetch_page(client, None, limit)
    yield page
    while page.next_cursor is not None:
        if page.next_cursor in seen:
            raise CursorLoop(f"the records service repeated cursor {page.next_cursor!r}")
        seen.add(page.next_cursor)
        page = fetch_page(client, page.next_cursor, limit)
        yield page


@task(**UPSTREAM_TASK, task_run_name="load-batch-{batch.batch_id}")
def load_batch(ledger_api: str, batch: Batch) -> LedgerReceipt:
    """POST a batch under its Idempotency-Key into the ledger of HttpService block
    `ledger_api`; a replay (200) means it was already applied. It takes the block's name, not
    a client, so that a task runner in other processes (Dask) can be sent its arguments."""
    with load_service("ledger_api", ledger_api).client() as client:
        return post_batch(client, batch)


def post_batch(client: httpx.Client, batch: Batch) -> LedgerReceipt:
    """The POST itself, for `load_batch` and for callers with retries of their own (the message
    queue's task, ledger_sync's load); `httpx.HTTPStatusError` on a refusal."""
    response = checked(
        client.post(
            "/ledger/batches",
            content=batch.body,
            headers={"Content-Type": "application/json", "Idempotency-Key": batch.idempotency_key},
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
