"""Alternative path: rates from the primary, else the secondary, else recent stored ones.

Scenario
    The primary rates service is down (or its breaker is open). A secondary service speaks
    the same contract; rates stored by an earlier run would do if they are recent enough.

Solution
    `flows.ledger.rates.resolve_rates`, the chain ledger_sync uses: each source is tried
    once (task retries for transient failures, its circuit breaker to skip one known to be
    down); every good answer is stored as the last known good rates; stored rates younger
    than `max_rates_age_hours` stand in when no service answers; otherwise the result says
    `none` and the caller degrades.

How to run
    python -c "from flows.fallback_rates import fallback_rates; print(fallback_rates())"
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from flows.ledger.parameters import RatesAgeHours
from flows.ledger.rates import resolve_rates, stored_rates_age
from flows.ledger.upstreams import open_upstreams


class RatesAnswer(BaseModel):
    source: str
    currencies: list[str]


@flow(name="fallback-rates")
def fallback_rates(
    rates_api: str = "sandbox-rates",
    fallback_rates_api: str = "sandbox-rates-fallback",
    max_rates_age_hours: RatesAgeHours = None,
) -> RatesAnswer:
    """Get EUR rates from the first source that has them.

    Args:
      rates_api: Name of the HttpService block document of the primary rates service.

      fallback_rates_api: Name of the HttpService block document of the secondary rates
        service, asked when the primary fails.

      max_rates_age_hours: Hours; when neither service answers, rates stored by an earlier
        run may stand in if they are younger than this; empty: the setting
        RESILIENT_FLOWS_MAX_RATES_AGE_HOURS (24 unless set).
    """
    with open_upstreams(rates_api=rates_api, fallback_rates_api=fallback_rates_api) as upstreams:
        max_age = stored_rates_age(max_rates_age_hours)
        rates = resolve_rates(upstreams.rates_sources, None, max_age)
    return RatesAnswer(source=rates.source, currencies=sorted(rates.rates))
