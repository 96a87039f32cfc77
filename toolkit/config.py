"""Per-environment settings of resilient-flows, selected in one place.

Scenario: the same flows run on a laptop (local server, SQLite), on a scaled-out server
(Postgres, Redis, several workers) and in Docker; only where shared state lives and who gets
alerted differ.

Solution: one pydantic-settings model read from `RESILIENT_FLOWS_*` environment variables
(or a `.env` file in the working directory); Prefect's own settings (`PREFECT_*`, including
result storage) stay Prefect's. Flows and toolkit pieces call `settings()` at run time, never
at import time, and never branch on an environment name.
"""

from __future__ import annotations

from functools import lru_cache

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
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0)


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings of this process (read once; tests call `settings.cache_clear()`)."""
    return Settings()
