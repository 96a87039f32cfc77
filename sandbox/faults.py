"""Run-time fault injection for the sandbox services.

Scenario: resilience code has to be exercised against 5xx, 429, slow answers, dropped
connections, answers lost after a write, forced 4xx and full outages, on demand and
reproducibly.
Solution: a ``Faults`` dataclass per service says what to inject; a ``FaultInjector`` draws a
per-request ``Plan`` from a seeded ``random.Random`` under a lock.
How to run: ``sandbox.set_faults("ledger", error_rate=0.3)`` in-process, or
``python -m sandbox --fault ledger:error_rate=0.3`` / ``POST /faults`` on the control port.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, get_origin, get_type_hints

ERROR_STATUSES: tuple[int, ...] = (500, 502, 503, 504)
_RATE_FIELDS = ("error_rate", "rate_limit_rate", "slow_rate", "drop_rate", "drop_after_apply_rate")


@dataclass
class Faults:
    """What one service injects; every fault is off by default."""

    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: int = 1
    slow_rate: float = 0.0
    slow_seconds: float = 0.0
    drop_rate: float = 0.0
    drop_after_apply_rate: float = 0.0
    delay_after_apply: float = 0.0
    force_status: list[int] = field(default_factory=list)
    down: bool = False

    def __post_init__(self) -> None:
        for name in _RATE_FIELDS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        if self.retry_after < 0 or self.slow_seconds < 0 or self.delay_after_apply < 0:
            raise ValueError("retry_after, slow_seconds and delay_after_apply must be >= 0")
        # 1xx are not final answers, a client would wait for another status line.
        if any(not 200 <= status <= 599 for status in self.force_status):
            raise ValueError("force_status entries must be within 200..599")

    @classmethod
    def from_fields(cls, fields: Mapping[str, object], base: Faults | None = None) -> Faults:
        """Build from loosely typed values (CLI strings, JSON) on top of ``base``."""
        types = get_type_hints(cls)
        unknown = sorted(set(fields) - set(types))
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        coerced: dict[str, Any] = {name: _coerce(types[name], v) for name, v in fields.items()}
        return replace(base or cls(), **coerced)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _coerce(kind: object, value: object) -> object:
    if kind is bool:
        if isinstance(value, str):
            if value.lower() not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(f"not a boolean: {value!r}")
            return value.lower() in {"1", "true", "yes", "on"}
        return bool(value)
    if get_origin(kind) is list:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ValueError(f"not a list of statuses: {value!r}")
        return [int(item) for item in items if str(item).strip()]
    if kind is int:
        return int(str(value))
    return float(str(value))


def parse_fault_arg(arg: str) -> tuple[str, str, str]:
    """Split ``SERVICE:FIELD=VALUE`` (the ``--fault`` CLI syntax)."""
    service, sep, assignment = arg.partition(":")
    name, eq, value = assignment.partition("=")
    if not (sep and eq and service and name):
        raise ValueError(f"expected SERVICE:FIELD=VALUE, got {arg!r}")
    return service, name, value


@dataclass(frozen=True)
class Plan:
    """What to do with one request, decided before it is processed."""

    drop: bool = False  # close the connection before processing, no answer
    sleep: float = 0.0  # before answering
    status: int | None = None  # answer this instead of processing
    error: str = ""
    retry_after: int | None = None
    drop_after_apply: bool = False  # ledger POST: process, then close without answering
    delay_after_apply: float = 0.0  # ledger POST: process, sleep, then answer


class FaultInjector:
    """Holds one service's ``Faults`` and draws reproducible per-request plans."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._faults = Faults()

    @property
    def faults(self) -> Faults:
        return self._faults

    def set(self, faults: Faults) -> None:
        with self._lock:
            self._faults = faults

    def plan(self, *, ledger_post: bool = False) -> Plan:
        with self._lock:
            f = self._faults
            if self._hit(f.drop_rate):
                return Plan(drop=True)
            sleep = f.slow_seconds if self._hit(f.slow_rate) else 0.0
            status, error = None, ""
            if f.force_status:
                status, error = self._rng.choice(f.force_status), "forced"
            elif self._hit(f.rate_limit_rate):
                status, error = 429, "rate limited"
            elif self._hit(f.error_rate):
                status = self._rng.choice(ERROR_STATUSES)
                error = f"injected {status}"
            if status is not None:
                return Plan(sleep=sleep, status=status, error=error, retry_after=f.retry_after)
            if not ledger_post:
                return Plan(sleep=sleep)
            return Plan(
                sleep=sleep,
                drop_after_apply=self._hit(f.drop_after_apply_rate),
                delay_after_apply=f.delay_after_apply,
            )

    def _hit(self, rate: float) -> bool:
        return rate > 0.0 and self._rng.random() < rate
