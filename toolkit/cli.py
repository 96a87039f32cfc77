"""Command lines of the project: `name=value` parameters, read one way everywhere.

Scenario: `python -m flows.ledger_sync batch_size=100`, `python -m flows.message_queue
malformed=[5]` and `python -m deployments run NAME --param k=v` all take parameters on the
command line; if each read them its own way, `[5]` would be a list in one and text in another.

Solution: `parse_parameters` reads every `name=value` as Prefect's own `prefect deployment run
--param` does: the value as JSON when it parses as JSON (`100`, `true`, `[5]`, `null`,
`{"a": 1}`), else as the text itself. The flow's typed parameters then validate it.

How to run:
    parse_parameters(["batch_size=100", "records_api=sandbox-records", "malformed=[5]"])
    # {"batch_size": 100, "records_api": "sandbox-records", "malformed": [5]}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def parse_parameters(pairs: Iterable[str]) -> dict[str, Any]:
    """`name=value` pairs as a dict; ValueError naming the pair when it has no name."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"{pair!r}: expected name=value")
        try:
            parameters[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            parameters[name.strip()] = value
    return parameters
