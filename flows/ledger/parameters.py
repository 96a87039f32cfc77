"""Parameters the ledger flows share, typed once so every flow's UI form reads the same."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

RecordsApi = Annotated[str, Field(description="HttpService block document of the records service.")]
RatesApi = Annotated[
    str, Field(description="HttpService block document of the primary rates service.")
]
LedgerApi = Annotated[str, Field(description="HttpService block document of the ledger service.")]
BatchSize = Annotated[
    int, Field(ge=1, le=500, description="Records per page, and so per ledger batch.")
]
