"""Parameters the ledger flows share, typed once so every flow's UI form reads the same."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field, WithJsonSchema

RecordsApi = Annotated[str, Field(description="HttpService block document of the records service.")]
RatesApi = Annotated[
    str, Field(description="HttpService block document of the primary rates service.")
]
LedgerApi = Annotated[str, Field(description="HttpService block document of the ledger service.")]
BatchSize = Annotated[
    int, Field(ge=1, le=500, description="Records per page, and so per ledger batch.")
]

EurAmount = Annotated[
    Decimal,
    Field(ge=0),
    # pydantic's schema for Decimal also admits any string, so the UI would offer a text box
    # and enforce_parameter_schema would let "-5" through: the form asks for a number >= 0.
    WithJsonSchema({"type": "number", "minimum": 0}),
]
"""An amount of money in EUR, at least 0: a number in the UI form, a Decimal in the flow."""

RatesAgeHours = Annotated[
    float | None,
    Field(gt=0, description="Stored rates younger than this (hours) may stand in."),
]
"""How old stored rates may be to stand in for the rates services; empty: the setting
`RESILIENT_FLOWS_MAX_RATES_AGE_HOURS` (24 hours unless set)."""
