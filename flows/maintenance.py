"""Maintenance: a year of nightly runs in bounded storage.

Scenario
    Every sync writes checkpoints to result storage, the fan-out its receipts, the message
    queue its outcomes, every run its artifacts; Prefect deletes none of result storage
    by itself. A finished sync deletes its own walk's pages, but a kill between
    recording it done and deleting them leaves them behind; so does a walk given up for a
    new snapshot, and a walk nobody resumes. Left alone, a nightly sync of a million records
    fills a disk or a bucket within the year.

Solution
    A daily `maintenance` run (prefect.yaml) lists result storage (toolkit/storage.py) and
    reads the syncs' states, then deletes what no sync can need, each object's fate a pure
    decision (`kind_to_prune`):
    - pages of walks that no sync is walking (finished, superseded, or of an older schema
      version), once they are an hour old: a walk that has just begun writes its first page
      before its state, and must not lose it;
    - pages of a walk untouched for the retention (abandoned: a resume fetches them again);
    - rates pinned to a snapshot, fan-out receipts and queue outcomes past the retention;
    - artifacts past the retention, through Prefect's API;
    and truncates the ledger index's journal (toolkit/database.py `compact`).
    It never deletes a sync's state, nor the pages of a walk in progress, nor the last known
    good rates; a paused or loading sync needs no pages (its batches are in the ledger
    index). Flow runs and their logs are deleted by Prefect's own `db_vacuum` service,
    which the stack turns on (`python -m deployments up`). The run reports the files and
    bytes freed per kind as a table artifact; `dry_run` only counts.

How to run
    python -m deployments prune --older-than 30d --dry-run   # the same from the command line
    python -m flows.maintenance older_than_days=30
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, Field

from flows.ledger.models import Rates
from flows.ledger.sync_state import Page, SyncState
from toolkit.cli import parse_parameters
from toolkit.report import RunReport
from toolkit.state import STATE_SCHEMA_VERSION
from toolkit.storage import StoredObject

GRACE = timedelta(hours=1)
"""How old pages no sync is walking must be before they go: a new walk writes its first page
a moment before the state that names it."""

FINISHED_WALKS = "pages of finished walks"
ABANDONED_WALKS = "pages of abandoned walks"
RATES_PINS = "rates pinned to a snapshot"
FAN_OUT_RESULTS = "fan-out receipts"
QUEUE_OUTCOMES = "queue outcomes"
ARTIFACTS = "artifacts"
INDEX_JOURNAL = "ledger index journal"
PAST_RETENTION = {"fan-out": FAN_OUT_RESULTS, "message-queue": QUEUE_OUTCOMES}
CURRENT = f"v{STATE_SCHEMA_VERSION}"
ARTIFACTS_PAGE = 200  # the server's largest page


@dataclass(frozen=True)
class Walking:
    """A sync in the middle of a walk: the pages of that walk are what its resume reads."""

    walk_id: str
    saved: datetime  # when its state was last written


def kind_to_prune(
    stored: StoredObject, walking: dict[str, Walking], now: datetime, older_than: timedelta
) -> str | None:
    """Why `stored` may be deleted (its kind), or None to keep it; `walking` maps a sync's
    key (its `SyncState`'s object name) to its walk in progress."""
    parts = stored.key.split("/")
    past_retention = stored.modified < now - older_than
    if parts[0] == Page.KIND:
        if parts[1] != CURRENT or len(parts) != 5:  # an older schema's, in no folder
            return FINISHED_WALKS if past_retention else None
        sync, walk = parts[2], parts[3]
        current = walking.get(sync)
        if current is None or current.walk_id != walk:
            return FINISHED_WALKS if stored.modified < now - min(GRACE, older_than) else None
        return ABANDONED_WALKS if current.saved < now - older_than else None
    if parts[0] == Rates.KIND and (parts[1] != CURRENT or parts[2] == "pins"):
        # Older schemas' rates were pins or last known good; a current read rewrote the latter.
        return RATES_PINS if past_retention else None
    kind = PAST_RETENTION.get(parts[0])
    return kind if kind and past_retention else None


def syncs_walking(states: Iterable[tuple[StoredObject, bytes]]) -> dict[str, Walking]:
    """The syncs whose stored state (of the current schema) is walking; unreadable: not."""
    walking = {}
    for stored, content in states:
        try:
            state = SyncState.model_validate_json(content)
        except ValueError:
            continue
        if state.phase == "walking":
            walking[stored.key.rsplit("/", 1)[1]] = Walking(state.walk.walk_id, stored.modified)
    return walking


class Freed(BaseModel):
    kind: str
    files: int = 0
    bytes: int = 0


@task
def prune_storage(older_than: timedelta, dry_run: bool) -> list[Freed]:
    """Delete (or, in a dry run, count) the result-storage objects no sync can need."""
    from toolkit.storage import current_storage, delete, objects

    storage, now = current_storage(), datetime.now(UTC)
    states = [
        (stored, storage.read_path(stored.key, _sync=True))
        for stored in objects(f"{SyncState.KIND}/{CURRENT}/", storage)
    ]
    walking = syncs_walking(states)
    chosen = _chosen(objects("", storage), walking, now, older_than)
    if not dry_run:
        delete([stored.key for _, stored in chosen], storage)
    return _totals((kind, stored.size) for kind, stored in chosen)


@task
def compact_ledger_index() -> list[Freed]:
    """Truncate the ledger index's journal (SQLite's write-ahead log), which no run shrinks."""
    from toolkit.ledger_index import LedgerIndex, ledger_index_url

    return [Freed(kind=INDEX_JOURNAL, bytes=LedgerIndex(ledger_index_url()).compact())]


@task
def prune_artifacts(older_than: timedelta, dry_run: bool) -> list[Freed]:
    """Delete (or count) the artifacts created before the retention. Prefect sorts them
    newest first only: the pages are read down to the retention, then the rest collected."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import ArtifactSort

    cutoff, old, offset = datetime.now(UTC) - older_than, [], 0
    with get_client(sync_client=True) as client:
        while page := client.read_artifacts(
            sort=ArtifactSort.CREATED_DESC, limit=ARTIFACTS_PAGE, offset=offset
        ):
            old += [artifact.id for artifact in page if artifact.created < cutoff]
            offset += len(page)
        for artifact_id in [] if dry_run else old:
            client.delete_artifact(artifact_id)
    return [Freed(kind=ARTIFACTS, files=len(old))]


def _chosen(
    stored: Iterable[StoredObject],
    walking: dict[str, Walking],
    now: datetime,
    older_than: timedelta,
) -> list[tuple[str, StoredObject]]:
    chosen = ((kind_to_prune(item, walking, now, older_than), item) for item in stored)
    return [(kind, item) for kind, item in chosen if kind is not None]


def _totals(freed: Iterator[tuple[str, int]]) -> list[Freed]:
    files, sizes = Counter[str](), Counter[str]()
    for kind, size in freed:
        files[kind] += 1
        sizes[kind] += size
    kinds = [FINISHED_WALKS, ABANDONED_WALKS, RATES_PINS, FAN_OUT_RESULTS, QUEUE_OUTCOMES]
    return [Freed(kind=kind, files=files[kind], bytes=sizes[kind]) for kind in kinds]


@flow(name="maintenance", persist_result=False)
def maintenance(
    older_than_days: Annotated[float, Field(ge=0)] = 30,
    dry_run: bool = False,
) -> list[Freed]:
    """Delete the stored state and artifacts no sync can need any more.

    Args:
      older_than_days: The retention, in days: receipts, queue outcomes, rates pins, walks
        nobody resumes and artifacts older than this go.
      dry_run: Only count what would go; delete nothing.
    """
    older_than = timedelta(days=older_than_days)
    freed = [*prune_storage(older_than, dry_run), *prune_artifacts(older_than, dry_run)]
    if not dry_run:
        freed += compact_ledger_index()
    verb = "would free" if dry_run else "freed"
    report = RunReport(title="Maintenance", status="dry run" if dry_run else "completed")
    report.figures = {"Retention (days)": older_than_days, f"Files {verb}": _files(freed)}
    report.figures[f"Bytes {verb}"] = sum(row.bytes for row in freed)
    report.table_title = f"Stored objects {verb}, per kind"
    report.table = [row.model_dump() for row in freed]
    report.publish("maintenance")
    get_run_logger().info("Maintenance %s %d files, %d bytes", verb, _files(freed), _bytes(freed))
    return freed


def _files(freed: list[Freed]) -> int:
    return sum(row.files for row in freed)


def _bytes(freed: list[Freed]) -> int:
    return sum(row.bytes for row in freed)


def table(freed: list[Freed], dry_run: bool) -> str:
    """The freed figures as the terminal shows them."""
    verb = "would free" if dry_run else "freed"
    lines = [f"{'kind':<30}{'files':>10}{'bytes':>14}"]
    lines += [f"{row.kind:<30}{row.files:>10}{row.bytes:>14}" for row in freed]
    lines.append(f"{'total ' + verb:<30}{_files(freed):>10}{_bytes(freed):>14}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """`python -m flows.maintenance [older_than_days=30] [dry_run=true]`."""
    parameters: dict[str, Any] = parse_parameters(argv)
    freed = maintenance(**parameters)
    print(table(freed, bool(parameters.get("dry_run"))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
