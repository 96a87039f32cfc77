"""The scale profile's stack for tests, and deployment runs on it: runs, their ends, what
they left in the object store."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import redis
import sqlalchemy as sa

from deployments.profiles import profile_settings
from tests.helpers import ROOT, services

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

    from deployments.scale import ScaleStack

LEDGER_SYNC = "ledger-sync/ledger-sync"
DATABASE = "resilient_flows_test_scale"


def scale_settings(postgres_url: str, redis_url: str, database: str = DATABASE) -> dict[str, str]:
    """The scale profile pointed at the session's servers, in databases of the tests' own
    (`database`, and `<database>_ledger` for the ledger index)."""
    server = sa.make_url(postgres_url)
    cache = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    overrides = {
        "PREFECT_API_DATABASE_CONNECTION_URL": server.set(
            drivername="postgresql+asyncpg", database=database
        ).render_as_string(hide_password=False),
        "RESILIENT_FLOWS_LEDGER_INDEX_URL": server.set(
            drivername="postgresql+psycopg", database=f"{database}_ledger"
        ).render_as_string(hide_password=False),
        "PREFECT_REDIS_MESSAGING_HOST": str(cache.get("host", "127.0.0.1")),
        "PREFECT_REDIS_MESSAGING_PORT": str(cache.get("port", 6379)),
        "PREFECT_REDIS_MESSAGING_DB": str(max(int(cache.get("db", 0)) - 1, 0)),
        "RESILIENT_FLOWS_REDIS_URL": redis_url,
    }
    return profile_settings("scale", overrides)


@contextlib.contextmanager
def fresh_scale_stack(home: Path, database: str = DATABASE, **options: Any) -> Iterator[ScaleStack]:
    """A ScaleStack on the session's PostgreSQL and Redis (tests/helpers/services.py, as
    `make test`): the Prefect and ledger-index databases dropped and created afresh, and the
    Redis database below the session's for Prefect's messaging, emptied of an earlier stack's
    streams and leases. No workers yet: the caller deploys, then starts the ones it needs."""
    from deployments.scale import ScaleStack

    with services.postgres_server() as postgres:
        settings = scale_settings(postgres.url, os.environ["RESILIENT_FLOWS_REDIS_URL"], database)
        redis.Redis(
            host=settings["PREFECT_REDIS_MESSAGING_HOST"],
            port=int(settings["PREFECT_REDIS_MESSAGING_PORT"]),
            db=int(settings["PREFECT_REDIS_MESSAGING_DB"]),
        ).flushdb()
        os.environ["PWD"] = str(ROOT)  # prefect.yaml's pull step: this checkout
        with ScaleStack(home, settings, fresh=True, **options) as stack:
            yield stack


def stored_objects() -> list[str]:
    """The keys in the object store of the scale profile's results block."""
    from prefect_aws import S3Bucket

    from deployments.object_store import BUCKET, RESULTS_BLOCK

    block = S3Bucket.load(RESULTS_BLOCK)
    client = block.credentials.get_s3_client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def start_runs(name: str, parameter_sets: Iterable[dict[str, Any]]) -> list[UUID]:
    """A run of deployment `name` per parameter set, created at once; their ids."""
    from prefect.deployments import run_deployment

    return [
        run_deployment(name, parameters=parameters, timeout=0, as_subflow=False).id
        for parameters in parameter_sets
    ]


def wait_final(
    run_ids: Sequence[UUID], timeout: float, past_crashes: bool = False
) -> list[FlowRun]:
    """The runs once every one is in a final state (with `past_crashes`, not Crashed: a
    crashed run may yet be run again); an AssertionError after `timeout`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(run_ids))),
                limit=len(run_ids),
            )
            if len(runs) == len(run_ids) and all(
                run.state.is_final() and not (past_crashes and run.state.is_crashed())
                for run in runs
            ):
                by_id = {run.id: run for run in runs}
                return [by_id[run_id] for run_id in run_ids]
            if time.monotonic() > deadline:
                open_runs = [f"{r.id} {r.state.name}" for r in runs if not r.state.is_final()]
                raise AssertionError(f"runs not final after {timeout:.0f} s: {open_runs[:10]}")
            time.sleep(2)


def most_at_once(runs: Sequence[FlowRun]) -> int:
    """The most runs that were Running at the same moment (server-recorded start and end)."""
    edges = sorted(
        [(run.start_time, 1) for run in runs if run.start_time]
        + [(run.end_time, -1) for run in runs if run.end_time]
    )
    running = most = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        running += step
        most = max(most, running)
    return most


def states(runs: Sequence[FlowRun]) -> dict[str, str]:
    return {str(run.id): f"{run.state.name}: {run.state.message}" for run in runs}
