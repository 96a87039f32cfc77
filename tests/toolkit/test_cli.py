"""`name=value` parameters, read as `prefect deployment run --param` reads them."""

from __future__ import annotations

import pytest

from toolkit.cli import parse_parameters


def test_values_are_json_when_they_parse_and_text_otherwise() -> None:
    pairs = ["batch_size=100", "records_api=sandbox-records", "malformed=[5, 7]", "on=true"]
    assert parse_parameters([*pairs, "none=null", "eur=12.50", "text=a=b"]) == {
        "batch_size": 100,
        "records_api": "sandbox-records",
        "malformed": [5, 7],
        "on": True,
        "none": None,
        "eur": 12.5,
        "text": "a=b",
    }


def test_an_empty_value_is_the_empty_text() -> None:
    assert parse_parameters(["reason="]) == {"reason": ""}


@pytest.mark.parametrize("pair", ["batch_size", "=100", " =x"])
def test_a_pair_without_a_name_is_refused_by_name(pair: str) -> None:
    with pytest.raises(ValueError, match="expected name=value"):
        parse_parameters([pair])


def test_runs_started_here_send_no_heartbeats_unless_asked() -> None:
    from prefect.settings import get_current_settings

    from toolkit.cli import started_here

    assert get_current_settings().flows.heartbeat_frequency == 180  # Prefect's default
    with started_here():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == 180


def test_an_explicit_heartbeat_setting_is_honoured() -> None:
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        get_current_settings,
        temporary_settings,
    )

    from toolkit.cli import started_here

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}), started_here():
        assert get_current_settings().flows.heartbeat_frequency == 30
