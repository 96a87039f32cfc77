"""The run report: what a person reads of a run, in the UI, during or after it.

Scenario: a run finished, or failed; someone opens it in the Prefect UI and needs to know, in
a minute, what it did: how much work, what was skipped and why, what came from a checkpoint;
during a long run, how far it is.

Solution: `RunReport` collects named figures, notes and the rows of one table as the flow
goes, and `publish()` turns them into a markdown artifact and a table artifact of the run
(keys derived from the flow's name, so the UI's Artifacts page keeps a history per flow).
A phase of a long run reports how far it is with `Progress`: a progress artifact (when its
total is known), and the terminal's bar when the caller set up `toolkit.terminal`'s view.

How to run:
    progress = Progress(len(batches), "Batches loaded")
    for done, batch in enumerate(batches, start=1):
        load(batch)
        progress.update(done)
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from pydantic import BaseModel, Field

from toolkit.terminal import Display, current_display


def artifact_key(name: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")


class RunReport(BaseModel):
    title: str
    status: str = "running"
    figures: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    table_title: str = ""
    table: list[dict[str, Any]] = Field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", f"**Status:** {self.status}", "", "| | |", "|---|---:|"]
        lines += [f"| {label} | {value} |" for label, value in self.figures.items()]
        if self.notes:
            lines += ["", *[f"- {note}" for note in self.notes]]
        if self.table_title:
            lines += ["", f"{self.table_title}: {len(self.table)} (see the table artifact)."]
        return "\n".join(lines)

    def publish(self, key: str) -> None:
        """Create the markdown artifact (and the table artifact if a table was collected)."""
        key = artifact_key(key)
        create_markdown_artifact(self.markdown(), key=f"{key}-report", description=self.title)
        if self.table_title:
            create_table_artifact(
                self.table or [{"note": "none"}], key=f"{key}-table", description=self.table_title
            )


class Progress:
    """How far one phase of a run is, shown where someone looks.

    In the UI: a progress artifact, when `total` is known, updated at most every `interval`
    seconds and at the end (each update is an API call, about 20 ms: per-item updates would
    cost more than the work). At a terminal: the display of `toolkit.terminal.terminal_view`,
    if the caller set one up, at every update (rich redraws at its own pace).
    """

    def __init__(self, total: int | None, description: str, interval: float = 2.0) -> None:
        self.total = total
        self.description = description
        self.interval = interval
        self._done = 0
        self._shown = -1.0
        self._shown_at = 0.0
        self._id: UUID | None = None

    def update(self, done: int) -> None:
        self._done = done
        self._show(lambda display: display.update(self.description, done, self.total))
        if self.total is None:
            return  # no percentage without a total, so no artifact
        percent = percent_done(done, self.total)
        since = time.monotonic() - self._shown_at
        if not artifact_due(percent, self._shown, since, self.interval, self._id is not None):
            return
        self._shown_at = time.monotonic()
        if self._id is None:
            self._id = create_progress_artifact(percent, description=self.description)
        else:
            update_progress_artifact(self._id, percent)
        self._shown = percent

    def finish(self) -> None:
        """The phase is over: a display completes its bar, whose total was not known."""
        self._show(lambda display: display.finish(self.description, self._done))

    @staticmethod
    def _show(call: Callable[[Display], None]) -> None:
        if (display := current_display()) is None:
            return
        try:
            call(display)
        except Exception:  # a view of the run must never be what fails it
            logging.getLogger(__name__).debug("the progress display failed", exc_info=True)


def percent_done(done: int, total: int) -> float:
    """Whole percents, 100 at most (an empty phase counts as one item)."""
    return min(100.0, round(100.0 * done / max(total, 1), 0))


def artifact_due(percent: float, shown: float, since: float, interval: float, exists: bool) -> bool:
    """Whether to send `percent` to the artifact: it changed, and either the artifact does not
    exist yet, `interval` seconds passed since the last update, or the phase is complete."""
    if percent == shown:
        return False
    return not exists or since >= interval or percent >= 100.0
