"""Loading the HttpService block documents a flow was given, by name, on a real server."""

from __future__ import annotations

import pytest

from blocks.http_service import HttpService
from toolkit.services import ParameterError, load_service


def test_a_saved_document_loads(prefect_server: str) -> None:
    HttpService(base_url="http://127.0.0.1:9").save("test-service", overwrite=True)
    assert load_service("records_api", "test-service").base_url == "http://127.0.0.1:9"


def test_an_unknown_name_is_an_error_that_names_the_parameter(prefect_server: str) -> None:
    with pytest.raises(ParameterError, match=r"^ledger_api: no HttpService block document named"):
        load_service("ledger_api", "no-such-document")
