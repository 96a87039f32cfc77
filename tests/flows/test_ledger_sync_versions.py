"""Checkpoints written by an older state schema are migrated on read, or recomputed.

Rates stored by an older schema, inside Prefect's result-record envelope, are read after the
upgrade. An unreadable checkpoint is never fatal: the sync recomputes what it held.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore
from prefect.serializers import JSONSerializer

from sandbox.server import Sandbox
from tests.helpers.ledger import assert_ledger_exact
from tests.helpers.ledger import run_sync as sync
from toolkit.state import LAST_ENVELOPED, STATE_SCHEMA_VERSION

pytestmark = pytest.mark.usefixtures("sandbox_blocks")


def stored(storage: Path, kind: str, version: int = STATE_SCHEMA_VERSION) -> list[Path]:
    return sorted((storage / kind / f"v{version}").glob("*"))


def rewrite(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Change a stored checkpoint of the current version (the model's JSON)."""
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def test_rates_stored_by_an_older_schema_stand_in_after_the_upgrade(
    sandbox: Sandbox, result_storage: Path
) -> None:
    assert sync(max_records=100).name == "Completed"  # stores the last known good rates
    envelopes = ResultStore(
        result_storage=LocalFileSystem(basepath=str(result_storage)), serializer=JSONSerializer()
    )
    for path in stored(result_storage, "rates"):  # as the older release wrote them
        rates = {**json.loads(path.read_text()), "schema_version": LAST_ENVELOPED}
        envelopes.write(key=f"rates/v{LAST_ENVELOPED}/{path.name}", obj=rates)
        path.unlink()
    sandbox.grow(50)  # a new snapshot needs rates
    sandbox.set_down("rates", True)
    sandbox.set_down("rates_fallback", True)

    state = sync()

    assert state.name == "Completed"
    assert state.result().rates_source == "last known good (primary)"
    assert_ledger_exact(sandbox)
    assert stored(result_storage, "rates")  # migrated and written again as the current version


def test_an_unreadable_sync_state_is_recomputed_and_nothing_loads_twice(
    sandbox: Sandbox, result_storage: Path
) -> None:
    sync()
    (state_file,) = stored(result_storage, "sync")
    rewrite(state_file, lambda state: {**state, "phase": "no such phase"})
    sandbox.reset_counters()

    summary = sync().result()

    assert summary.pages_fetched == summary.pages  # the done walk's pages were deleted
    assert summary.loaded == 0 and summary.already_in_ledger == summary.valid
    assert sandbox.counters()["ledger"]["post_attempts"] == 0
    assert_ledger_exact(sandbox)


def test_unreadable_page_checkpoints_are_fetched_again_and_nothing_loads_twice(
    sandbox: Sandbox, result_storage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.ledger.load as load

    def post_failing(*args, **kwargs):  # the walk is over, its pages kept: it never loads
        raise RuntimeError("bug in the load (injected)")

    with monkeypatch.context() as patched:  # undo() would also undo the fixtures' settings
        patched.setattr(load, "post", post_failing)
        assert sync().is_failed()
    pages = sorted((result_storage / "walk-page" / f"v{STATE_SCHEMA_VERSION}").rglob("*"))
    pages = [path for path in pages if path.is_file()]
    assert pages
    for page in pages:  # as writes cut short would leave them
        page.write_text(page.read_text()[:40])
    (state_file,) = stored(result_storage, "sync")
    at_start = {"phase": "walking", "position": 0, "cursor": None, "end": None, "totals": {}}
    rewrite(state_file, lambda state: {**state, **at_start, "set_aside": []})  # as if killed
    sandbox.reset_counters()

    summary = sync().result()

    assert summary.resumed and summary.pages_fetched == len(pages)  # recomputed, not fatal
    assert sandbox.counters()["ledger"]["applied"] == len(pages)  # each batch once
    assert_ledger_exact(sandbox)
