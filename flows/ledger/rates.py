"""Rates for a sync: primary, else fallback, else recent stored rates, else none.

Scenario: the rates service is down, or its circuit breaker is open, in the middle of a
sync; a secondary service with the same contract exists, and yesterday's rates would do for
a few hours. With none of these, records in other currencies cannot be converted and must
not be loaded (the run degrades: see flows/ledger_sync.py).

Solution: `resolve_rates` tries each source once per sync (Prefect task retries for transient
failures, the shared circuit breaker to skip a source that is known to be down) and stores
every good answer as the last known good rates. Given a records snapshot, it pins the rates it
chose to it, so that a rerun over the same snapshot (flows/fan_out.py) converts with the same
rates and rebuilds identical batches, under the same Idempotency-Keys; `python -m deployments
prune` deletes pins past the retention. A ledger sync needs no pin: its walk's rates are part
of its `SyncState`, and a new walk is checked against the ledger index whatever its rates.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import get_run_logger, task

from flows.ledger.models import Rates
from flows.ledger.upstreams import UPSTREAM_TASK, RatesSource
from toolkit.retry import checked
from toolkit.state import lookup, remember

PINS = "pins"
"""The folder of the rates pinned to a snapshot."""


@task(**UPSTREAM_TASK, task_run_name="fetch-rates-{source.name}")
def fetch_rates(source: RatesSource) -> Rates:
    """GET /rates?base=EUR through the source's circuit breaker (shared by all workers)."""
    from toolkit.breaker import breaker_for  # Redis's client, imported when rates are fetched

    breaker = breaker_for(f"rates:{source.base_url}")
    response = breaker.call(lambda: checked(source.client.get("/rates", params={"base": "EUR"})))
    return Rates.model_validate({**response.json(), "source": source.name})


def stored_rates_age(hours: float | None) -> timedelta:
    """A flow's `max_rates_age_hours`, or the setting when the flow was given none."""
    from toolkit.config import settings

    return timedelta(hours=settings().max_rates_age_hours if hours is None else hours)


def resolve_rates(
    sources: list[RatesSource], snapshot: str | None, max_stored_age: timedelta
) -> Rates:
    """The rates pinned to `snapshot` (if given), else the first source that answers, else the
    last known good ones if recent enough."""
    logger = get_run_logger()
    pin = ("snapshot", sources[0].base_url, snapshot)
    pinned = lookup(Rates, *pin, folder=PINS) if snapshot else None
    if pinned is not None:
        return pinned
    for source in sources:
        try:
            rates = fetch_rates(source)
        except Exception as exc:
            logger.warning("Rates from %s unavailable: %s", source.name, exc)
            continue
        remember(rates, "last-known-good", sources[0].base_url)
        if snapshot:
            remember(rates, *pin, folder=PINS)
        return rates
    stored = lookup(Rates, "last-known-good", sources[0].base_url)
    if stored is not None and datetime.now(UTC) - stored.fetched_at <= max_stored_age:
        rates = stored.model_copy(update={"source": f"last known good ({stored.source})"})
        logger.warning("Using stored rates fetched at %s", stored.fetched_at.isoformat())
        if snapshot:
            remember(rates, *pin, folder=PINS)
        return rates
    logger.error("No rates: every rates service failed and no stored rates are recent enough")
    return Rates.unavailable()
