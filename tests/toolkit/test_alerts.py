"""Alerts through a real notification block to a loopback receiver, or the log alone."""

from __future__ import annotations

import pytest

from sandbox.receiver import Receiver
from toolkit.alerts import alert
from toolkit.config import settings


def test_an_alert_goes_through_the_configured_block(alert_receiver: Receiver) -> None:
    assert alert("Sync degraded", "3 of 100 lost") is True
    assert alert_receiver.json_bodies() == [{"subject": "Sync degraded", "body": "3 of 100 lost"}]


def test_without_a_block_an_alert_is_only_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("RESILIENT_FLOWS_ALERT_BLOCK", raising=False)
    settings.cache_clear()
    assert alert("Sync degraded", "3 of 100 lost") is False
    assert "ALERT Sync degraded: 3 of 100 lost" in caplog.text
    settings.cache_clear()


def test_an_undeliverable_alert_is_logged_never_raised(
    prefect_server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RESILIENT_FLOWS_ALERT_BLOCK", "custom-webhook/no-such-block")
    settings.cache_clear()
    assert alert("Sync failed", "why") is False  # the work it reports on goes on
    assert "could not be delivered" in caplog.text
    settings.cache_clear()
