"""Loading the HttpService block documents a flow was given, by name, on a real server."""

from __future__ import annotations

import ssl

import pytest

from blocks.http_service import HttpService
from toolkit.services import ParameterError, load_service, load_services


def test_a_saved_document_loads(prefect_server: str) -> None:
    HttpService(base_url="http://127.0.0.1:9").save("test-service", overwrite=True)
    assert load_service("records_api", "test-service").base_url == "http://127.0.0.1:9"


def test_an_unknown_name_is_an_error_that_names_the_parameter(prefect_server: str) -> None:
    with pytest.raises(ParameterError, match=r"^ledger_api: no HttpService block document named"):
        load_service("ledger_api", "no-such-document")


def test_several_documents_load_at_once_and_the_first_unknown_one_is_named(
    prefect_server: str,
) -> None:
    HttpService(base_url="http://127.0.0.1:9").save("test-a", overwrite=True)
    HttpService(base_url="http://127.0.0.1:10").save("test-b", overwrite=True)
    loaded = load_services({"records_api": "test-a", "ledger_api": "test-b"})
    assert {name: s.base_url for name, s in loaded.items()} == {
        "records_api": "http://127.0.0.1:9",
        "ledger_api": "http://127.0.0.1:10",
    }
    named = {"records_api": "test-a", "rates_api": "missing-1", "ledger_api": "missing-2"}
    with pytest.raises(ParameterError, match=r"^rates_api: .*'missing-1'"):
        load_services(named)


def test_an_https_service_verifies_with_the_certificate_store_and_http_trusts_nothing() -> None:
    def context(url: str) -> ssl.SSLContext:
        with HttpService(base_url=url).client() as client:
            return client._transport._pool._ssl_context  # type: ignore[attr-defined]

    https, http = context("https://example.invalid"), context("http://127.0.0.1:9")
    assert https.verify_mode == http.verify_mode == ssl.CERT_REQUIRED
    assert https.cert_store_stats()["x509_ca"] > 0
    assert http.cert_store_stats()["x509_ca"] == 0  # a TLS request from it fails verification
    assert context("https://example.invalid") is https  # loaded once
