"""Settings from RESILIENT_FLOWS_* variables: the tunables change without a code change."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest

from tests.helpers import ROOT
from toolkit.config import settings


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    settings.cache_clear()
    yield
    settings.cache_clear()


@pytest.mark.usefixtures("fresh_settings")
def test_defaults_are_todays_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("UPSTREAM_RETRIES", "UPSTREAM_BACKOFF_SECONDS", "FLOW_RETRIES"):
        monkeypatch.delenv(f"RESILIENT_FLOWS_{name}", raising=False)
    tunables = settings()
    assert (tunables.upstream_retries, tunables.upstream_backoff_seconds) == (8, 0.05)
    assert (tunables.flow_retries, tunables.flow_retry_delay_seconds) == (2, 2.0)
    assert tunables.max_rates_age_hours == 24.0


@pytest.mark.usefixtures("fresh_settings")
def test_retry_options_follow_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.retry import flow_retry_options, upstream_retry_options

    monkeypatch.setenv("RESILIENT_FLOWS_UPSTREAM_RETRIES", "3")
    monkeypatch.setenv("RESILIENT_FLOWS_UPSTREAM_BACKOFF_SECONDS", "1.5")
    monkeypatch.setenv("RESILIENT_FLOWS_FLOW_RETRIES", "0")
    settings.cache_clear()  # importing toolkit.retry may have read them already
    options = upstream_retry_options()
    assert options["retries"] == 3 and options["retry_delay_seconds"](3) == [1.5, 3.0, 6.0]
    assert flow_retry_options() == {"retries": 0, "retry_delay_seconds": 2.0}


@pytest.mark.usefixtures("fresh_settings")
def test_a_flows_own_rates_age_wins_over_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.ledger.rates import stored_rates_age

    monkeypatch.setenv("RESILIENT_FLOWS_MAX_RATES_AGE_HOURS", "2")
    assert stored_rates_age(None) == timedelta(hours=2)
    assert stored_rates_age(0.5) == timedelta(minutes=30)


@pytest.mark.usefixtures("fresh_settings")
def test_a_bad_value_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT_FLOWS_UPSTREAM_RETRIES", "-1")
    with pytest.raises(ValueError, match="upstream_retries"):
        settings()


def test_the_tasks_and_the_flow_take_their_retries_from_the_environment() -> None:
    """As a user runs it: a process whose environment says 3 and 0, no code changed."""
    code = (
        "from flows.ledger.upstreams import fetch_page, load_batch\n"
        "from flows.ledger_sync import ledger_sync\n"
        "print(fetch_page.retries, load_batch.retries, ledger_sync.retries)"
    )
    env = {
        **os.environ,
        "RESILIENT_FLOWS_UPSTREAM_RETRIES": "3",
        "RESILIENT_FLOWS_FLOW_RETRIES": "0",
    }
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert shown.stdout.split() == ["3", "3", "0"]
