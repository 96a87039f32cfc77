"""Graceful degradation: finish what can be done, and say loudly what could not.

Scenario: part of a run's work cannot be done (a page that answers 404, no exchange rate for
a currency). Failing the whole run throws away the rest; completing it quietly hides a loss.

Solution: a run that lost work ends with `outcome(...)`: within `max_loss_fraction` it ends
in a Completed-type state named `Degraded` (so retries and dependants treat it as done, while
the UI and the API show a name no one mistakes for success), emits a
`resilient-flows.run.degraded` event and alerts; above it, the run ends Failed, alerts, and
is not retried. A caller
that can know the loss before doing anything (ledger_sync plans first) calls `too_lossy`
before its side effects, so a failed run loads nothing.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from toolkit.alerts import alert
from toolkit.retry import spend_flow_retries


def loss_fraction(lost: int, total: int) -> float:
    return lost / total if total else 0.0


def too_lossy(lost: int, total: int, max_loss_fraction: float) -> str | None:
    """Why the run must fail instead of degrading, if it must."""
    fraction = loss_fraction(lost, total)
    if fraction <= max_loss_fraction:
        return None
    return f"{lost} of {total} lost ({fraction:.1%}, more than {max_loss_fraction:.1%} allowed)"


def outcome(
    what: str, result: Any, lost: int, total: int, max_loss_fraction: float, why: str
) -> Any:
    """The flow's return value: `result` itself, a `Degraded` state, or a `Failed` one."""
    if not lost:
        return result
    too_much = too_lossy(lost, total, max_loss_fraction)
    if too_much:
        alert(f"{what} failed: too much lost", f"{too_much}: {why}")
        spend_flow_retries()  # the task retries have had their chance; a rerun loses the same
        return Failed(message=f"{too_much}: {why}")
    message = f"Degraded: {lost} of {total} not done ({loss_fraction(lost, total):.1%}): {why}"
    emit_event(
        event="resilient-flows.run.degraded",
        resource={
            "prefect.resource.id": f"resilient-flows.run.{flow_run.id}",
            "prefect.resource.name": what,
        },
        payload={"lost": lost, "total": total, "why": why},
    )
    alert(f"{what} degraded", message)
    return Completed(name="Degraded", message=message, data=result)
