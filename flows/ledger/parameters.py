"""Parameters the ledger flows share, typed once so every flow's UI form reads the same.

Only types and bounds here: a parameter's description is its flow's docstring (`Args:`), the
one place Prefect 3.9 reads it from (tests/flows/test_parameter_forms.py pins that).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field, WithJsonSchema

BatchSize = Annotated[int, Field(ge=1, le=500)]

EurAmount = Annotated[
    Decimal,
    Field(ge=0),
    # pydantic's schema for Decimal also admits any string, so the UI would offer a text box
    # and enforce_parameter_schema would let "-5" through: the form asks for a number >= 0.
    WithJsonSchema({"type": "number", "minimum": 0}),
]
"""An amount of money in EUR, at least 0: a number in the UI form, a Decimal in the flow."""

RatesAgeHours = Annotated[float | None, Field(gt=0)]
"""How old stored rates may be to stand in for the rates services; empty: the setting
`RESILIENT_FLOWS_MAX_RATES_AGE_HOURS` (24 hours unless set)."""
