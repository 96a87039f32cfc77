"""Checkpoints written by an older state schema are migrated on read, or recomputed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.server import Sandbox
from sandbox.verify import check_ledger

pytestmark = pytest.mark.usefixtures("sandbox_blocks")


def stored_pages(storage: Path, version: int) -> dict[str, Path]:
    """Result-store files of page checkpoints of `version`, by key."""
    return {
        str(path.relative_to(storage)): path
        for path in (storage / "page" / f"v{version}").glob("*")
    }


def downgrade_to_v1(storage: Path) -> list[Path]:
    """Rewrite every v2 page checkpoint in the v1 shape, under its v1 key."""
    from prefect.results import ResultStore
    from prefect.serializers import JSONSerializer

    store = ResultStore(serializer=JSONSerializer())
    written = []
    for key, path in stored_pages(storage, 2).items():
        data = store.read(key).result
        data["schema_version"] = 1
        data["quarantined_ids"] = [q["record_id"] for q in data.pop("quarantined")]
        data["eur_total"] = data.pop("total_eur")
        store.write(key=key.replace("/v2/", "/v1/"), obj=data)
        path.unlink()
        written.append(storage / key.replace("/v2/", "/v1/"))
    store.cache.clear()
    return written


def test_v1_checkpoints_are_migrated_not_redone(sandbox: Sandbox, result_storage: Path) -> None:
    from flows.ledger_sync import ledger_sync

    first = ledger_sync(batch_size=100)
    assert len(downgrade_to_v1(result_storage)) == first.pages
    assert stored_pages(result_storage, 2) == {}
    sandbox.reset_counters()

    again = ledger_sync(batch_size=100)

    assert again.pages_resumed == first.pages  # every page came from a migrated checkpoint
    assert sandbox.counters()["ledger"]["post_attempts"] == 0
    assert again.quarantined == first.quarantined and again.total_eur == first.total_eur
    assert len(stored_pages(result_storage, 2)) == first.pages  # rewritten as v2
    assert check_ledger(sandbox.dataset.expected_entries(), sandbox.ledger_state()).exact


def test_an_unreadable_old_checkpoint_is_recomputed(sandbox: Sandbox, result_storage: Path) -> None:
    from flows.ledger_sync import ledger_sync

    first = ledger_sync(batch_size=100)
    broken = downgrade_to_v1(result_storage)[0]
    record = json.loads(broken.read_text())
    record["result"] = json.dumps({"schema_version": 1, "snapshot": 7})  # no longer a page
    broken.write_text(json.dumps(record))
    sandbox.reset_counters()

    again = ledger_sync(batch_size=100)

    assert again.pages_resumed == first.pages - 1
    ledger = sandbox.counters()["ledger"]
    assert (ledger["applied"], ledger["replayed"]) == (0, 1)  # recomputed page: a replay
    assert check_ledger(sandbox.dataset.expected_entries(), sandbox.ledger_state()).exact
