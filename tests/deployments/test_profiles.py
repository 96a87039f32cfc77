"""The profiles' settings: read from deployments/profiles.toml, the environment winning."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from deployments.profiles import PROFILES_FILE, main, profile_names, profile_settings
from tests.helpers import ROOT


def test_the_profiles_are_local_and_scale() -> None:
    assert profile_names() == ["local", "scale"]
    local = profile_settings("local", {})
    assert set(local) == {  # Prefect's defaults, but for retention
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD",
    }


@pytest.mark.parametrize("profile", ["local", "scale"])
def test_each_profile_has_prefect_vacuum_old_flow_runs_and_events(
    profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import Settings

    for key, value in profile_settings(profile, {}).items():
        if key.startswith("PREFECT_SERVER_SERVICES_DB_VACUUM"):
            monkeypatch.setenv(key, value)
    vacuum = Settings().server.services.db_vacuum  # as Prefect's server reads them
    assert vacuum.enabled == {"events", "flow_runs"}
    assert vacuum.retention_period == timedelta(days=30)


def test_the_scale_profile_names_every_shared_store() -> None:
    scale = profile_settings("scale", {})
    assert scale["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert scale["PREFECT_MESSAGING_BROKER"] == "prefect_redis.messaging"
    assert scale["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == "prefect_redis.lease_storage"
    assert scale["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == "s3-bucket/resilient-flows-results"
    assert scale["RESILIENT_FLOWS_LEDGER_INDEX_URL"].startswith("postgresql+psycopg://")


def test_a_variable_in_the_environment_wins_over_the_file() -> None:
    url = "postgresql+asyncpg://prefect@db.internal:5432/prefect"
    scale = profile_settings("scale", {"PREFECT_API_DATABASE_CONNECTION_URL": url, "OTHER": "x"})
    assert scale["PREFECT_API_DATABASE_CONNECTION_URL"] == url
    assert "OTHER" not in scale  # only the profile's own variables


def test_an_unknown_profile_is_refused_naming_the_file() -> None:
    with pytest.raises(ValueError, match=re.escape(str(PROFILES_FILE))):
        profile_settings("laptop", {})


def test_no_flow_block_or_deployment_reads_a_profile() -> None:
    """Switching profiles changes settings only: no code under flows/ or blocks/ reads the
    environment (settings come from toolkit/config.py and Prefect's own), and neither they
    nor prefect.yaml name a profile."""
    sources = [*ROOT.glob("flows/**/*.py"), *ROOT.glob("blocks/**/*.py")]
    for path in sources:
        text = path.read_text()
        assert "environ" not in text and "getenv" not in text, path
        assert "profile" not in text.lower(), path
    assert "profile" not in (ROOT / "prefect.yaml").read_text().lower()


def test_the_cli_prints_the_resolved_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scale"]) == 0
    assert "PREFECT_MESSAGING_BROKER=prefect_redis.messaging" in capsys.readouterr().out
