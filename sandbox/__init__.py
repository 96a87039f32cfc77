"""Sandbox upstream: local fakes of the records, rates and ledger services.

Scenario: resilient flows must be tested against upstreams that page, fail, hang, drop
connections, lose answers and go down, without any network beyond loopback.
Solution: a stdlib HTTP server per service with run-time fault injection, a deterministic data
set with known bad rows that can live (grow anywhere, repeat an id, expire old snapshots, loop a
cursor), an idempotent ledger, and counters that tests read.
How to run: ``with Sandbox(n_records=200) as sb: sb.grow(50, "middle")`` in tests, or
``python -m sandbox``.
"""

from sandbox.dataset import RATES, Dataset
from sandbox.faults import Faults
from sandbox.server import SERVICES, Sandbox

__all__ = ["RATES", "SERVICES", "Dataset", "Faults", "Sandbox"]
