"""Decide whether a planned sync may load: fail if too much is lost, ask a person if unusual.

Scenario
    A walk is over and nothing has been sent. If a large share of the records cannot reach
    the ledger (no EUR rate, a missing page), loading the rest would leave a ledger that
    looks complete and is not. If the sync would load an unusual amount of money, or an
    unusual share of its records is invalid, a person should look first.

Solution
    From the walk's totals alone (the whole sync's, even when the walk was resumed): above
    `max_loss_fraction` lost, the run fails, loading nothing (toolkit.degradation); above the
    approval thresholds, the run pauses with a form (toolkit.approval). A refusal, or a loss
    too large, gives the walk's claims back to the ledger index and marks the sync
    `rejected`: the next run starts from the records service's current snapshot. A sync that
    an earlier run already let load (phase `loading`) is not asked again.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from prefect.states import Cancelled, State

from flows.ledger.sync_state import RunFigures, SyncState, drop_pages, state_key
from flows.ledger.upstreams import Upstreams
from toolkit import degradation
from toolkit.approval import TimeoutPolicy, request_approval
from toolkit.state import remember

if TYPE_CHECKING:  # imported when a sync opens it (toolkit/ledger_claims.py)
    from toolkit.ledger_index import LedgerIndex


@dataclass(frozen=True)
class Rules:
    """When a sync may load without a person, and when not at all."""

    max_loss_fraction: float
    approval_above_eur: Decimal | None = None
    approval_above_quarantine_rate: float | None = None
    approval_timeout_seconds: int = 3600
    on_approval_timeout: TimeoutPolicy = "reject"


def approval_reason(state: SyncState, rules: Rules) -> str | None:
    """Why this sync needs a person's approval before it loads, if it does."""
    reasons = []
    above_eur, to_load = rules.approval_above_eur, state.totals.to_load_eur
    if above_eur is not None and to_load > above_eur:
        reasons.append(f"it would load {to_load} EUR (threshold {above_eur} EUR)")
    above_rate, rate = rules.approval_above_quarantine_rate, state.quarantine_rate
    if above_rate is not None and rate > above_rate:
        reasons.append(f"{rate:.1%} of its records are invalid ({above_rate:.1%} allowed)")
    return " and ".join(reasons) or None


def decide(
    upstreams: Upstreams, index: LedgerIndex, state: SyncState, run: RunFigures, rules: Rules
) -> State | None:
    """None if the sync may load; otherwise the state the run ends in, nothing loaded."""
    if state.phase != "walked":
        return None  # loading: decided by an earlier run; done: nothing to decide
    if degradation.too_lossy(state.lost, state.total, rules.max_loss_fraction):
        reject(upstreams, index, state)
        return degradation.outcome(
            "Ledger sync",
            None,
            state.lost,
            state.total,
            rules.max_loss_fraction,
            f"{state.why_lost}; nothing loaded",
        )
    reason = approval_reason(state, rules)
    if reason is None:
        return None
    decision = request_approval(
        "Load this ledger sync?",
        f"Snapshot {state.walk.snapshot}: {reason}.",
        rules.approval_timeout_seconds,
        rules.on_approval_timeout,
    )
    verdict = "granted" if decision.approved else "refused"
    run.notes.append(f"Approval: {verdict} by {decision.decided_by}: {decision.reason}")
    if decision.approved:
        return None
    reject(upstreams, index, state)
    return Cancelled(name="Rejected", message=f"REJECTED by {decision.decided_by}: nothing loaded")


def reject(upstreams: Upstreams, index: LedgerIndex, state: SyncState) -> None:
    """Give the walk's claims back (nothing was sent) and let the next run start afresh."""
    index.release_planned(upstreams.ledger_url, upstreams.records_url)
    state.phase = "rejected"
    remember(state, *state_key(upstreams))
    drop_pages(upstreams, state)
