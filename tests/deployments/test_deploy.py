"""`python -m deployments deploy NAME ...`: which deployments a selection deploys."""

from __future__ import annotations

from deployments.deploy import select
from tests.helpers import ROOT

PREFECT_YAML = ROOT / "prefect.yaml"


def names(*chosen: str, docker: bool = False) -> list[str]:
    return [d["name"] for d in select(PREFECT_YAML, list(chosen), docker)]


def test_a_deployment_whose_crashes_are_re_run_brings_the_re_run_along() -> None:
    assert names("ledger-sync") == ["ledger-sync", "rerun-crashed"]
    assert names("ledger-sync-docker") == ["ledger-sync-docker", "rerun-crashed-docker"]
    assert names("ledger-sync", "rerun-crashed") == ["ledger-sync", "rerun-crashed"]


def test_other_deployments_come_alone_and_no_name_means_every_one_of_the_pool() -> None:
    assert names("fire-and-forget") == ["fire-and-forget"]
    every = names()
    assert "rerun-crashed" in every and not any(name.endswith("-docker") for name in every)
