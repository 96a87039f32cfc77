"""What the whole-process benchmark checks and counts at the sandbox after each run.

Scenario: a benchmark figure means nothing if the run it times did not do the whole job.
Solution: `exact_ledger` fails the benchmark unless the ledger holds every valid record
exactly once; `request_counts` says how many requests each program made to each service.
How to run: used by benchmarks/whole_process.py.
"""

from __future__ import annotations

from typing import Any

from benchmarks.processes import BenchmarkError, SandboxProcess


def exact_ledger(sandbox: SandboxProcess, what: str) -> dict[str, Any]:
    """The ledger's state, after checking it holds every valid record exactly once."""
    ledger = sandbox.control("/ledger")
    expected = sandbox.control("/expected")
    total, want = ledger["summary"]["total_eur"], expected["total_eur"]
    if total != want:
        raise BenchmarkError(f"{what}: the ledger holds {total} EUR, {want} EUR expected")
    net = ledger["net_applications"]
    twice = {record_id: n for record_id, n in net.items() if n > 1}
    if twice:
        sample = dict(list(twice.items())[:5])
        raise BenchmarkError(f"{what}: {len(twice)} records applied more than once: {sample}")
    missing = set(expected["entries"]) - set(net)
    if missing:
        raise BenchmarkError(f"{what}: {len(missing)} valid records are not in the ledger")
    return ledger


def request_counts(counters: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    """Requests to records/rates/ledger since `before` (or since the last reset)."""

    def count(*services: str) -> int:
        now = sum(counters[s]["requests"] for s in services)
        return now - (sum(before[s]["requests"] for s in services) if before else 0)

    return f"{count('records')}/{count('rates', 'rates_fallback')}/{count('ledger')}"
