"""Command lines of the project: `name=value` parameters, read one way everywhere.

Scenario: `python -m flows.ledger_sync batch_size=100`, `python -m flows.message_queue
malformed=[5]` and `python -m deployments run NAME --param k=v` all take parameters on the
command line; if each read them its own way, `[5]` would be a list in one and text in another.

Solution: `parse_parameters` reads every `name=value` as Prefect's own `prefect deployment run
--param` does: the value as JSON when it parses as JSON (`100`, `true`, `[5]`, `null`,
`{"a": 1}`), else as the text itself. The flow's typed parameters then validate it.

A run started at a terminal sends no heartbeats unless asked to (`started_here`): Prefect's
flow engine sends them from a thread that sleeps in one-second steps and is joined when the
run ends, so every run's exit waited for it, up to a second. Heartbeats feed the zombie
automation (deployments/crash_detection.py), which watches deployment runs, and those set
`PREFECT_FLOWS_HEARTBEAT_FREQUENCY` in prefect.yaml; a run started at a terminal has its
person watching. An explicit setting is honoured.

How to run:
    parse_parameters(["batch_size=100", "records_api=sandbox-records", "malformed=[5]"])
    # {"batch_size": 100, "records_api": "sandbox-records", "malformed": [5]}
    with started_here():
        my_flow(**parameters)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


@contextmanager
def started_here() -> Iterator[None]:
    """Flow runs inside send no heartbeats, unless PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set."""
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        get_current_settings,
        temporary_settings,
    )

    if "heartbeat_frequency" in get_current_settings().flows.model_fields_set:
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
