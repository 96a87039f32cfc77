"""Load a planned sync: post each claimed batch once, in walk order, and record it applied.

Scenario
    The walk has claimed, page by page, the records the ledger does not hold yet, and the
    sync may load. A POST may be answered or its answer lost; the process may die between the
    ledger applying a batch and the index recording it; the index may fail to record it.

Solution
    The batches to post are the ledger index's approved, unconfirmed ones (toolkit/
    ledger_index.py): `approve` makes every planned batch of the walk loadable, and from then
    on a batch stays approved until the ledger has answered for it. Each is read back as the
    walk claimed it (its body in the index, so the same id, Idempotency-Key and bytes) and
    posted, up to `ledger_posts_in_flight` at once (toolkit/overlap.py; 1 posts one at a
    time); each is recorded applied as soon as its answer arrives, inside one Prefect
    transaction: if the index cannot record it, the transaction's rollback hook DELETEs the
    batch from the ledger, and the batch, still approved, is posted again by the flow's
    retry. A run that dies anywhere leaves approved batches that the next run posts again, at
    most `ledger_posts_in_flight` of them already in the ledger: a replay if the ledger had
    applied it, an application if not. After a failed POST no new one starts; those in flight
    are recorded as they end. A POST is not a task run (see flows/ledger/plan.py for why);
    its retries are `toolkit.retry.call_upstream`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import get_run_logger
from prefect.transactions import CommitMode, Transaction, transaction

from flows.ledger.models import Batch, LedgerReceipt
from flows.ledger.sync_state import RunFigures, SyncState, drop_pages, state_key
from flows.ledger.upstreams import Upstreams, compensate_batch, post_batch
from toolkit.config import settings
from toolkit.ledger_claims import ClaimedBatch
from toolkit.overlap import in_flight
from toolkit.report import Progress
from toolkit.retry import TransientError, call_upstream
from toolkit.state import remember

if TYPE_CHECKING:  # imported when a sync opens it (toolkit/ledger_claims.py)
    from toolkit.ledger_index import LedgerIndex


class BatchNotRecorded(TransientError):
    """A batch was posted but the index did not record it: compensated, safe to retry."""


def load_sync(upstreams: Upstreams, index: LedgerIndex, state: SyncState, run: RunFigures) -> None:
    """Post every approved batch of the sync, then mark the sync done."""
    if state.phase == "done":  # found done (nothing new): an earlier run posted everything
        return
    if state.phase == "walked":
        state.phase = "loading"
        remember(state, *state_key(upstreams))
    index.approve(upstreams.ledger_url, state.walk.walk_id)
    todo = index.to_load(upstreams.ledger_url, upstreams.records_url)
    progress = Progress(len(todo), "Batches loaded")

    def read(claim: ClaimedBatch) -> Batch:
        with run.clock.phase("read batch"):
            return claimed_batch(index, upstreams.ledger_url, claim)

    batches = (read(claim) for claim in todo)
    width = settings().ledger_posts_in_flight
    with in_flight(batches, lambda batch: post(upstreams, batch), width) as answers:
        for done, (batch, receipt) in enumerate(run.clock.waits("POST wait", answers), start=1):
            record_applied(upstreams, index, batch, receipt, run)
            run.batches_replayed += receipt.replayed
            run.batches_applied += not receipt.replayed
            run.entries_loaded += len(batch.entries)
            progress.update(done)
    state.phase = "done"
    remember(state, *state_key(upstreams))
    drop_pages(upstreams, state)
    get_run_logger().info(
        "Loaded %d batches (%d replayed) of %d new records; %d already in the ledger",
        run.batches_applied + run.batches_replayed,
        run.batches_replayed,
        run.entries_loaded,
        state.totals.already_held,
    )


def claimed_batch(index: LedgerIndex, ledger: str, claim: ClaimedBatch) -> Batch:
    """The batch exactly as the walk claimed it: the same id, the same Idempotency-Key."""
    batch = Batch.from_body(index.body(ledger, claim.batch_id))
    if batch.batch_id != claim.batch_id:
        raise RuntimeError(f"batch {claim.batch_id}: the index holds the body of another one")
    return batch


def post(upstreams: Upstreams, batch: Batch) -> LedgerReceipt:
    """POST a batch under the upstream retry policy (in a thread of `in_flight`)."""
    return call_upstream(
        lambda: post_batch(upstreams.ledger, batch), f"POST of batch {batch.batch_id}"
    )


def record_applied(
    upstreams: Upstreams, index: LedgerIndex, batch: Batch, receipt: LedgerReceipt, run: RunFigures
) -> None:
    """Record a posted batch applied, all or nothing: a rollback DELETEs it from the ledger."""

    def compensate(_: Transaction) -> None:
        compensate_batch(upstreams.ledger, batch.batch_id)

    try:
        with run.clock.phase("record applied"), transaction(commit_mode=CommitMode.LAZY) as txn:
            txn.stage(receipt, on_rollback_hooks=[compensate])
            index.mark_applied(upstreams.ledger_url, batch.batch_id)
    except Exception as exc:  # the rollback hook has DELETEd it: the flow retry posts it again
        run.batches_compensated += 1
        raise BatchNotRecorded(f"batch {batch.batch_id} was compensated: {exc}") from exc
    if txn.is_rolled_back():
        raise BatchNotRecorded(f"batch {batch.batch_id} was rolled back")
