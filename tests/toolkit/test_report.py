"""toolkit/report.py: the report's markdown, and when a progress artifact is updated.

The artifacts themselves, on a real server, are checked by
tests/flows/test_ledger_sync.py::test_report_and_progress_artifacts.
"""

from __future__ import annotations

from toolkit.report import RunReport, artifact_due, artifact_key, percent_done


def test_percent_is_whole_and_capped() -> None:
    assert percent_done(1, 3) == 33.0
    assert percent_done(7, 5) == 100.0
    assert percent_done(0, 0) == 0.0  # an empty phase: no division by zero


def test_the_first_update_creates_the_artifact_at_once() -> None:
    assert artifact_due(percent=1.0, shown=-1.0, since=0.0, interval=2.0, exists=False)


def test_later_updates_wait_for_the_interval_but_not_the_end() -> None:
    assert not artifact_due(percent=40.0, shown=30.0, since=1.0, interval=2.0, exists=True)
    assert artifact_due(percent=40.0, shown=30.0, since=2.0, interval=2.0, exists=True)
    assert artifact_due(percent=100.0, shown=40.0, since=0.1, interval=2.0, exists=True)


def test_an_unchanged_percent_is_never_sent_again() -> None:
    assert not artifact_due(percent=100.0, shown=100.0, since=60.0, interval=2.0, exists=True)


def test_the_markdown_has_the_status_figures_and_notes() -> None:
    report = RunReport(title="Ledger sync", status="completed", table_title="Records set aside")
    report.figures["Records"] = 500
    report.notes.append("Snapshot s1 expired (410): started again.")

    lines = report.markdown().splitlines()
    assert lines[0] == "# Ledger sync" and "**Status:** completed" in lines
    assert "| Records | 500 |" in lines
    assert "- Snapshot s1 expired (410): started again." in lines
    assert lines[-1] == "Records set aside: 0 (see the table artifact)."


def test_artifact_keys_are_lowercase_letters_digits_and_dashes() -> None:
    assert artifact_key("Ledger sync / EUR") == "ledger-sync-eur"
