"""Is the sandbox ledger exact? Every valid record applied once, to the cent, nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class LedgerCheck:
    total: Decimal
    expected_total: Decimal
    missing: list[str]
    applied_twice: list[str]
    unexpected: list[str]
    applied_ever_twice: list[str]

    @property
    def exact(self) -> bool:
        return self.total == self.expected_total and not (
            self.missing or self.applied_twice or self.unexpected
        )

    def __str__(self) -> str:
        return (
            f"ledger total {self.total} EUR, expected {self.expected_total} EUR; "
            f"{len(self.missing)} missing, {len(self.applied_twice)} applied twice, "
            f"{len(self.unexpected)} not expected"
        )


def check_ledger(expected: dict[str, Decimal], ledger_state: dict[str, Any]) -> LedgerCheck:
    """Compare `Dataset.expected_entries()` with `Sandbox.ledger_state()`."""
    net = {rid: n for rid, n in ledger_state["net_applications"].items() if n}
    ever = ledger_state["applications_ever"]
    return LedgerCheck(
        total=Decimal(ledger_state["summary"]["total_eur"]),
        expected_total=sum(expected.values(), Decimal("0.00")),
        missing=sorted(set(expected) - set(net)),
        applied_twice=sorted(rid for rid, n in net.items() if n > 1),
        unexpected=sorted(set(net) - set(expected)),
        applied_ever_twice=sorted(rid for rid, n in ever.items() if n > 1),
    )
