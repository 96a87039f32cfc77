"""The run report: what a person reads in the UI after (or during) a run.

Scenario: a run finished, or failed; someone opens it in the Prefect UI and needs to know, in
a minute, what it did: how much work, what was skipped and why, what came from a checkpoint.

Solution: `RunReport` collects named figures, notes and the rows of one table as the flow
goes, and `publish()` turns them into a markdown artifact and a table artifact of the run
(keys derived from the flow's name, so the UI's Artifacts page keeps a history per flow).
`Progress` wraps a progress artifact for long runs.
"""

from __future__ import annotations

import re
import time
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from pydantic import BaseModel, Field


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
    """A progress artifact, updated at most every `interval` seconds, and at the end.

    Each update is an API call (about 20 ms): per-item updates would cost more than the work.
    """

    def __init__(self, total: int, description: str, interval: float = 2.0) -> None:
        self.total = max(total, 1)
        self.description = description
        self.interval = interval
        self._shown = -1.0
        self._shown_at = 0.0
        self._id: UUID | None = None

    def update(self, done: int) -> None:
        percent = min(100.0, round(100.0 * done / self.total, 0))
        recent = time.monotonic() - self._shown_at < self.interval
        if percent == self._shown or (recent and percent < 100.0 and self._id is not None):
            return
        self._shown_at = time.monotonic()
        if self._id is None:
            self._id = create_progress_artifact(percent, description=self.description)
        else:
            update_progress_artifact(self._id, percent)
        self._shown = percent
