"""flows/fallback_rates.py: the fallback chain in each order."""

from __future__ import annotations

import pytest

from sandbox.server import Sandbox

pytestmark = pytest.mark.usefixtures("sandbox_blocks")


def source(**parameters) -> str:
    from flows.fallback_rates import fallback_rates

    return fallback_rates(**parameters).source


def test_primary_first(sandbox: Sandbox) -> None:
    assert source() == "primary"
    assert sandbox.counters()["rates_fallback"]["requests"] == 0


def test_fallback_when_the_primary_fails(sandbox: Sandbox) -> None:
    sandbox.set_faults("rates", force_status=[503])
    assert source() == "fallback"


def test_stored_rates_when_both_fail(sandbox: Sandbox) -> None:
    assert source() == "primary"  # stores them
    sandbox.set_down("rates", True)
    sandbox.set_down("rates_fallback", True)
    assert source() == "last known good (primary)"


def test_stored_rates_too_old_give_none(sandbox: Sandbox) -> None:
    assert source() == "primary"
    sandbox.set_down("rates", True)
    sandbox.set_down("rates_fallback", True)
    assert source(max_rates_age_hours=1e-9) == "none"
