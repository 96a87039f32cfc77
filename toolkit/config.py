"""Per-environment settings of resilient-flows, selected in one place.

Scenario: the same flows run on a laptop (local server, SQLite), on a scaled-out server
(Postgres, Redis, several workers) and in Docker; only where shared state lives and who gets
alerted differ.

Solution: one pydantic-settings model read from `RESILIENT_FLOWS_*` environment variables
(or a `.env` file in the working directory); Prefect's own settings (`PREFECT_*`, including
result storage) stay Prefect's. Flows and toolkit pieces call `settings()` at run time and
never branch on an environment name; the one exception is what Prefect fixes when a task or
a flow is decorated (retries and their backoff), read when toolkit.retry is first imported,
from the same environment variables.

Tunables sized for production, not for the sandbox, are settings too: how often an upstream
call is retried and how long it backs off, how often a flow run is retried, how old stored
rates may be. Their defaults are today's values; `RESILIENT_FLOWS_UPSTREAM_RETRIES=3` and the
like change them without a code change.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RESILIENT_FLOWS_", env_file=".env", extra="ignore"
    )

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis holding state shared by every run and worker (circuit breakers).",
    )
    alert_block: str | None = Field(
        default=None,
        description="Notification block for alerts, as 'block-type-slug/name' "
        "(e.g. 'custom-webhook/ops-alerts'); unset: alerts are only logged.",
    )
    ledger_index_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the durable record of what each ledger holds "
        "(toolkit/ledger_index.py): unset, a SQLite file in PREFECT_HOME; for workers on "
        "several machines a shared PostgreSQL, e.g. 'postgresql+psycopg://user@host/db'.",
    )
    ledger_posts_in_flight: int = Field(
        default=4,
        ge=1,
        description="Batch POSTs a ledger sync keeps in flight (flows/ledger/load.py); a kill "
        "replays at most this many batches, which the ledger answers as replays; 1 posts "
        "one batch at a time.",
    )
    timings_file: str | None = Field(
        default=None,
        description="A file that `python -m flows.ledger_sync` writes its run's wall time by "
        "phase to, as JSON, for benchmarks/whole_process.py; unset: none is written.",
    )
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    upstream_retries: int = Field(
        default=8,
        ge=0,
        description="Retries of a transient upstream failure (Prefect task retries).",
    )
    upstream_backoff_seconds: float = Field(
        default=0.05,
        ge=0,
        description="Backoff factor: retry n waits about factor x 2^n seconds, jittered by half.",
    )
    flow_retries: int = Field(
        default=2, ge=0, description="Retries of a flow run that failed transiently (ledger_sync)."
    )
    flow_retry_delay_seconds: float = Field(default=2.0, ge=0)
    max_rates_age_hours: float = Field(
        default=24.0,
        gt=0,
        description="Stored rates younger than this stand in when no rates service answers; "
        "a flow's own parameter, when given, wins.",
    )
    task_runner: Literal["threads", "dask"] = Field(
        default="threads",
        description="What runs the fan-out flow's tasks (toolkit/task_runners.py): threads of "
        "the flow-run process, or Dask workers (the scale profile).",
    )
    dask_address: str | None = Field(
        default=None,
        description="With task_runner 'dask': the scheduler of a running Dask cluster, e.g. "
        "'tcp://dask-scheduler:8786'; unset, each flow run starts a local cluster.",
    )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings of this process (read once; tests call `settings.cache_clear()`)."""
    return Settings()
