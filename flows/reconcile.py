"""Pub-sub: a reconciliation that runs whenever a ledger sync says it finished.

Scenario
    After every sync, someone should check that the ledger agrees with what the sync says it
    loaded. The sync should not know who cares (reconciliation today, reporting tomorrow),
    and a new subscriber should not need a change to the sync.

Solution
    ledger_sync publishes a `resilient-flows.ledger-sync.completed` event (payload: the
    ledger block, the snapshot, the EUR total it has loaded over all runs of the snapshot).
    This flow's deployment subscribes with a trigger declared in prefect.yaml, whose
    parameters are taken from the event: Prefect's automations start one run per event, a
    worker runs it. The flow reads the ledger summary and fails, loudly, if the ledger holds
    less than the sync reported.

How to run
    prefect --no-prompt deploy --name reconcile-ledger   # from the project root
    prefect worker start --pool local-process
    # then run ledger_sync: each completed sync starts a reconcile-ledger run
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from toolkit.retry import checked
from toolkit.services import load_service


class Reconciliation(BaseModel):
    ledger_total_eur: Decimal
    reported_total_eur: Decimal
    batches: int


@flow(name="reconcile-ledger")
def reconcile_ledger(
    ledger_api: str = "sandbox-ledger",
    reported_total_eur: Annotated[Decimal, Field(ge=0)] = Decimal("0"),
) -> Reconciliation:
    """Check that the ledger holds at least what the sync reported.

    Args:
      ledger_api: Name of the HttpService block document of the ledger service to check.

      reported_total_eur: EUR total the sync says it loaded, at least 0; the run fails if the
        ledger holds less. The deployment's trigger takes it from the sync's event; 0 only
        checks that the ledger answers.
    """
    with load_service("ledger_api", ledger_api).client() as client:
        summary = checked(client.get("/ledger/summary")).json()
    result = Reconciliation(
        ledger_total_eur=Decimal(summary["total_eur"]),
        reported_total_eur=reported_total_eur,
        batches=summary["batches"],
    )
    if result.ledger_total_eur < reported_total_eur:
        raise ValueError(
            f"the ledger holds {result.ledger_total_eur} EUR, the sync reported "
            f"{reported_total_eur} EUR"
        )
    get_run_logger().info(
        "Ledger agrees: %s EUR in %d batches", result.ledger_total_eur, result.batches
    )
    return result
