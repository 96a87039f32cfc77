"""`python -m deployments prune`: its retention argument, and its refusal without a server."""

from __future__ import annotations

import argparse

import pytest

from deployments.prune import days, main


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30d", 30.0), ("30", 30.0), ("12h", 0.5), ("90m", 90 / 1440), ("0", 0.0), ("1.5d", 1.5)],
)
def test_a_retention_reads_as_days(text: str, expected: float) -> None:
    assert days(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["30 days", "-1d", "d", "30w", ""])
def test_a_retention_without_a_unit_it_knows_is_refused_naming_the_option(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="--older-than"):
        days(text)


def test_without_a_server_it_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: None}), pytest.raises(SystemExit) as exited:
        main(["--dry-run"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "prune: set PREFECT_API_URL to the API of the server to prune, "
        "e.g. http://127.0.0.1:4200/api"
    ]
