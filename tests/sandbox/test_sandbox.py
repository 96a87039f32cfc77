"""The sandbox upstream honours its contract and injects every fault a client can observe.

Everything goes over real loopback HTTP with httpx, as the flows will use it.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from sandbox import RATES, Dataset, Faults, Sandbox
from sandbox.dataset import INVALID_KINDS, to_eur
from sandbox.server import encode_cursor

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(n_records=120, invalid_fraction=0.1, seed=3) as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as c:
        yield c


def page(
    client: httpx.Client, sb: Sandbox, limit: int | str, cursor: str | None = None
) -> httpx.Response:
    params: dict[str, str | int] = {"limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    return client.get(sb.urls["records"] + "/records", params=params)


def post_batch(client: httpx.Client, sb: Sandbox, key: str | None, body: object) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(sb.urls["ledger"] + "/ledger/batches", content=content, headers=headers)


def batch(batch_id: str, *record_ids: str, amount: str = "1.50") -> dict[str, object]:
    entries = [{"record_id": rid, "account": "acc-1", "amount_eur": amount} for rid in record_ids]
    return {"batch_id": batch_id, "entries": entries}


# -- data set ---------------------------------------------------------------------------------


def test_dataset_is_deterministic_with_a_stable_snapshot() -> None:
    a, b = Dataset.generate(300, 0.05, seed=1), Dataset.generate(300, 0.05, seed=1)
    assert a.records == b.records and a.invalid == b.invalid and a.snapshot == b.snapshot
    assert Dataset.generate(300, 0.05, seed=2).snapshot != a.snapshot
    assert Dataset.generate(301, 0.05, seed=1).snapshot != a.snapshot
    assert [r["id"] for r in a.records] == [f"r-{i:06d}" for i in range(1, 301)]


def test_dataset_invalid_rows_and_expected_total() -> None:
    ds = Dataset.generate(400, 0.05, seed=5)
    assert len(ds.invalid) == round(400 * 0.05) == 20
    assert list(ds.invalid.values())[:4] == list(INVALID_KINDS)
    ids = sorted(ds.invalid)
    assert ids[0] < "r-000050" and ids[-1] > "r-000350"  # spread, not bunched
    by_id = {r["id"]: r for r in ds.records}
    for rid, kind in ds.invalid.items():
        r = by_id[rid]
        if kind == "missing_field":
            assert "account" not in r or "currency" not in r
        elif kind == "unknown_currency":
            assert r["currency"] == "XYZ"
        elif kind == "bad_amount":
            assert r["amount"] == "abc" or "," in r["amount"]
        else:
            assert r["amount"].startswith("-")
    for rid in ds.valid_ids():
        r = by_id[rid]
        assert r["currency"] in RATES and r["account"].startswith("acc-")
        assert Decimal("0.01") <= Decimal(r["amount"]) <= Decimal("5000.00")
        assert r["updated_at"].endswith("Z")
    entries = ds.expected_entries()
    assert set(entries) == ds.valid_ids() and len(entries) == 380
    some = next(r for r in ds.records if r.get("currency") == "JPY" and r["id"] in entries)
    assert entries[some["id"]] == to_eur(some["amount"], "162.50")
    assert ds.expected_total_eur() == sum(entries.values())
    assert ds.expected_total_eur() == ds.expected_total_eur().quantize(Decimal("0.01"))


# -- records ----------------------------------------------------------------------------------


def test_paging_covers_every_record_once_on_one_snapshot(sb: Sandbox, client: httpx.Client) -> None:
    seen: list[str] = []
    snapshots: set[str] = set()
    cursor: str | None = None
    while True:
        r = page(client, sb, 37, cursor)
        assert r.status_code == 200
        body = r.json()
        snapshots.add(body["snapshot"])
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert snapshots == {sb.dataset.snapshot}
    assert seen == [r["id"] for r in sb.dataset.records]
    fetches = sb.counters()["records"]["page_fetches"]
    assert fetches[""] == 1 and sum(fetches.values()) == 4  # ceil(120 / 37)


def test_cursor_keeps_its_page_after_reseed_and_expires_after_two(
    sb: Sandbox, client: httpx.Client
) -> None:
    first = page(client, sb, 50).json()
    cursor = first["next_cursor"]
    before = page(client, sb, 50, cursor).json()
    old = sb.dataset.snapshot

    sb.reseed(seed=99)
    assert sb.dataset.snapshot != old
    assert page(client, sb, 50, cursor).json() == before
    fresh = page(client, sb, 50).json()
    assert fresh["snapshot"] == sb.dataset.snapshot
    assert fresh["items"] != first["items"]

    sb.reseed(seed=100)
    assert page(client, sb, 50, cursor).status_code == 410
    # Any snapshot not kept is treated as expired: the client's answer is the same, restart.
    assert page(client, sb, 50, encode_cursor("0123456789ab", 0)).status_code == 410
    assert page(client, sb, 50, fresh["next_cursor"]).status_code == 200


@pytest.mark.parametrize(
    ("limit", "cursor"),
    [
        (None, None),
        ("0", None),
        ("501", None),
        ("abc", None),
        ("1.5", None),
        ("10", "!!not-a-cursor!!"),
        ("10", "bm9jb2xvbg"),  # base64 of "nocolon"
        ("10", base64.urlsafe_b64encode(b"snap:-1").decode()),  # offset not a number
    ],
)
def test_bad_limit_or_cursor_is_400(
    sb: Sandbox, client: httpx.Client, limit: str | None, cursor: str | None
) -> None:
    params = {k: v for k, v in {"limit": limit, "cursor": cursor}.items() if v is not None}
    r = client.get(sb.urls["records"] + "/records", params=params)
    assert r.status_code == 400 and "error" in r.json()


def test_limit_bounds_are_inclusive(sb: Sandbox, client: httpx.Client) -> None:
    assert page(client, sb, 10, encode_cursor(sb.dataset.snapshot, 121)).status_code == 400
    assert len(page(client, sb, 1).json()["items"]) == 1
    body = page(client, sb, 500).json()
    assert len(body["items"]) == 120 and body["next_cursor"] is None


# -- rates and routing ------------------------------------------------------------------------


def test_rates_primary_and_fallback(sb: Sandbox, client: httpx.Client) -> None:
    for service in ("rates", "rates_fallback"):
        r = client.get(sb.urls[service] + "/rates", params={"base": "EUR"})
        assert r.status_code == 200
        assert r.json() == {"base": "EUR", "as_of": "2026-11-24T00:00:00Z", "rates": RATES}
        assert client.get(sb.urls[service] + "/rates", params={"base": "USD"}).status_code == 400
        assert client.get(sb.urls[service] + "/rates").status_code == 400


def test_unknown_paths_are_404(sb: Sandbox, client: httpx.Client) -> None:
    for service, path in [("records", "/nope"), ("rates", "/rates/x"), ("ledger", "/ledger")]:
        assert client.get(sb.urls[service] + path).status_code == 404


# -- ledger -----------------------------------------------------------------------------------


def test_ledger_apply_replay_and_conflicts(sb: Sandbox, client: httpx.Client) -> None:
    b1 = batch("b1", "r-000001", "r-000002")
    r = post_batch(client, sb, "k1", b1)
    assert (r.status_code, r.json()) == (201, {"batch_id": "b1", "accepted": 2})
    r = post_batch(client, sb, "k1", b1)
    assert (r.status_code, r.json()) == (200, {"batch_id": "b1", "accepted": 2})
    assert post_batch(client, sb, "k1", batch("b1", "r-000003")).status_code == 409
    assert post_batch(client, sb, "k2", batch("b1", "r-000003")).status_code == 409

    counters = sb.counters()["ledger"]
    assert (counters["applied"], counters["replayed"], counters["conflicts"]) == (1, 1, 2)
    assert counters["post_attempts"] == 4
    assert counters["by_status"] == {"201": 1, "200": 1, "409": 2}

    summary = client.get(sb.urls["ledger"] + "/ledger/summary").json()
    assert summary == {"batches": 1, "entries": 2, "total_eur": "3.00"}
    state = sb.ledger_state()
    assert state["summary"] == summary
    assert state["net_applications"] == {"r-000001": 1, "r-000002": 1}


@pytest.mark.parametrize(
    ("key", "body"),
    [
        (None, batch("b1", "r-000001")),
        ("k", b"{not json"),
        ("k", {"batch_id": "", "entries": [{"record_id": "r", "account": "a", "amount_eur": "1"}]}),
        ("k", {"batch_id": 7, "entries": [{"record_id": "r", "account": "a", "amount_eur": "1"}]}),
        ("k", {"batch_id": "b", "entries": []}),
        ("k", {"batch_id": "b", "entries": "nope"}),
        ("k", {"batch_id": "b", "entries": [{"record_id": "r", "amount_eur": "1"}]}),
        ("k", batch("b", "r-000001", amount="12,50")),
        ("k", batch("b", "r-000001", amount="abc")),
        ("k", [1, 2]),
    ],
)
def test_ledger_rejects_malformed_batches_with_422(
    sb: Sandbox, client: httpx.Client, key: str | None, body: object
) -> None:
    r = post_batch(client, sb, key, body)
    assert r.status_code == 422 and "error" in r.json()
    assert sb.ledger_state()["summary"]["batches"] == 0


def test_ledger_delete_compensates_and_releases_the_key(sb: Sandbox, client: httpx.Client) -> None:
    b1 = batch("b1", "r-000001")
    assert post_batch(client, sb, "k1", b1).status_code == 201
    assert client.delete(sb.urls["ledger"] + "/ledger/batches/b1").status_code == 204
    assert client.delete(sb.urls["ledger"] + "/ledger/batches/b1").status_code == 204
    assert client.delete(sb.urls["ledger"] + "/ledger/batches/unknown").status_code == 204
    assert sb.ledger_state()["summary"] == {"batches": 0, "entries": 0, "total_eur": "0.00"}

    assert post_batch(client, sb, "k1", b1).status_code == 201  # applied again
    state = sb.ledger_state()
    assert state["net_applications"] == {"r-000001": 1}
    assert state["applications_ever"] == {"r-000001": 2}
    counters = sb.counters()["ledger"]
    assert (counters["applied"], counters["deleted"]) == (2, 1)

    sb.reset_ledger()
    assert sb.ledger_state()["applications_ever"] == {}


# -- faults -----------------------------------------------------------------------------------


def test_error_rate_answers_5xx(sb: Sandbox, client: httpx.Client) -> None:
    sb.set_faults("rates", error_rate=1.0)
    statuses = {client.get(sb.urls["rates"] + "/rates?base=EUR").status_code for _ in range(30)}
    assert statuses <= {500, 502, 503, 504} and len(statuses) > 1
    assert client.get(sb.urls["rates_fallback"] + "/rates?base=EUR").status_code == 200
    sb.set_faults("rates")
    assert client.get(sb.urls["rates"] + "/rates?base=EUR").status_code == 200


def test_rate_limit_answers_429_with_retry_after(sb: Sandbox, client: httpx.Client) -> None:
    sb.set_faults("records", rate_limit_rate=1.0, retry_after=3)
    r = page(client, sb, 10)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert sb.counters()["records"]["page_fetches"] == {}


def test_partial_error_rate_is_reproducible() -> None:
    def statuses() -> list[int]:
        with Sandbox(n_records=10, seed=4) as sb, httpx.Client() as client:
            sb.set_faults("rates", error_rate=0.5)
            return [client.get(sb.urls["rates"] + "/rates?base=EUR").status_code for _ in range(20)]

    first = statuses()
    assert first == statuses()
    assert 200 in first and set(first) - {200}


def test_slow_answer_times_out_the_client(sb: Sandbox) -> None:
    sb.set_faults("rates", slow_rate=1.0, slow_seconds=0.6)
    with httpx.Client(timeout=0.15) as c, pytest.raises(httpx.ReadTimeout):
        c.get(sb.urls["rates"] + "/rates?base=EUR")


def test_drop_closes_the_connection_without_answer(sb: Sandbox, client: httpx.Client) -> None:
    sb.set_faults("records", drop_rate=1.0)
    with pytest.raises(httpx.TransportError):
        page(client, sb, 10)
    counters = sb.counters()["records"]
    assert (counters["requests"], counters["dropped"], counters["by_status"]) == (1, 1, {})


def test_drop_after_apply_applies_then_loses_the_answer(sb: Sandbox, client: httpx.Client) -> None:
    sb.set_faults("ledger", drop_after_apply_rate=1.0)
    with pytest.raises(httpx.TransportError):
        post_batch(client, sb, "k1", batch("b1", "r-000001"))
    assert sb.counters()["ledger"]["applied"] == 1
    sb.set_faults("ledger")
    assert post_batch(client, sb, "k1", batch("b1", "r-000001")).status_code == 200
    assert sb.ledger_state()["net_applications"] == {"r-000001": 1}


def test_delay_after_apply_holds_the_answer(sb: Sandbox) -> None:
    sb.set_faults("ledger", delay_after_apply=0.6)
    with httpx.Client(timeout=0.15) as c, pytest.raises(httpx.ReadTimeout):
        post_batch(c, sb, "k1", batch("b1", "r-000001"))
    assert sb.ledger_state()["summary"]["batches"] == 1  # applied before the delay


def test_down_refuses_connections_then_comes_back_on_the_same_port(
    sb: Sandbox, client: httpx.Client
) -> None:
    url = sb.urls["ledger"] + "/ledger/summary"
    assert client.get(url).status_code == 200  # leaves a keep-alive connection in the pool
    sb.set_down("ledger", True)
    with pytest.raises(httpx.ConnectError):
        client.get(url)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)
    sb.set_down("ledger", False)
    assert sb.urls["ledger"] + "/ledger/summary" == url
    assert client.get(url).status_code == 200
    sb.set_faults("ledger", down=True)
    with pytest.raises(httpx.ConnectError):
        client.get(url)
    sb.set_faults("ledger")
    assert client.get(url).status_code == 200


def test_force_status_answers_only_those(sb: Sandbox, client: httpx.Client) -> None:
    sb.set_faults("ledger", force_status=[400, 404])
    answers = [post_batch(client, sb, "k1", batch("b1", "r-000001")) for _ in range(20)]
    assert {r.status_code for r in answers} == {400, 404}
    assert all(r.json() == {"error": "forced"} for r in answers)
    assert sb.ledger_state()["summary"]["batches"] == 0
    assert sb.counters()["ledger"]["post_attempts"] == 20


def test_faults_are_validated_and_reset() -> None:
    with pytest.raises(ValueError, match="unknown fault fields"):
        Faults.from_fields({"eror_rate": 1})
    with pytest.raises(ValueError):
        Faults(error_rate=1.5)
    parsed = Faults.from_fields({"force_status": "429,503", "down": "true", "slow_seconds": "2"})
    assert parsed == Faults(force_status=[429, 503], down=True, slow_seconds=2.0)
    sb = Sandbox(n_records=5)  # not started: knobs only
    sb.set_faults("ledger", Faults(error_rate=0.5), retry_after=4)
    assert sb.get_faults("ledger") == Faults(error_rate=0.5, retry_after=4)
    sb.set_faults("ledger")
    assert sb.get_faults("ledger") == Faults()
    with pytest.raises(ValueError, match="unknown service"):
        sb.set_faults("control", error_rate=1.0)


# -- control, CLI and speed -------------------------------------------------------------------


def test_control_api(sb: Sandbox, client: httpx.Client) -> None:
    control = sb.urls["control"]
    expected = client.get(control + "/expected").json()
    assert expected["snapshot"] == sb.dataset.snapshot
    assert (expected["records"], expected["valid"]) == (120, 108)
    assert Decimal(expected["total_eur"]) == sb.dataset.expected_total_eur()
    assert expected["invalid"] == sb.dataset.invalid

    r = client.post(control + "/faults", json={"service": "rates", "faults": {"error_rate": 1}})
    assert r.status_code == 200
    assert client.get(sb.urls["rates"] + "/rates?base=EUR").status_code >= 500
    assert client.post(control + "/faults", json={"service": "rates"}).status_code == 200
    assert client.get(sb.urls["rates"] + "/rates?base=EUR").status_code == 200
    bad = client.post(control + "/faults", json={"service": "rates", "faults": {"nope": 1}})
    assert bad.status_code == 400

    assert post_batch(client, sb, "k1", batch("b1", "r-000001")).status_code == 201
    assert client.get(control + "/ledger").json()["summary"]["batches"] == 1
    assert client.get(control + "/counters").json()["ledger"]["applied"] == 1
    assert client.post(control + "/reset").status_code == 200
    assert client.get(control + "/ledger").json()["summary"]["batches"] == 0
    assert client.get(control + "/counters").json()["ledger"]["applied"] == 0

    assert client.post(control + "/down", json={"service": "records", "down": True}).is_success
    with pytest.raises(httpx.ConnectError):
        page(client, sb, 10)
    assert client.post(control + "/down", json={"service": "records", "down": False}).is_success
    reseeded = client.post(control + "/reseed", json={"seed": 42}).json()
    assert reseeded["snapshot"] == sb.dataset.snapshot == page(client, sb, 10).json()["snapshot"]


def test_cli_prints_urls_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "sandbox", "--records", "30", "--fault", "rates:error_rate=1"]
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            urls = json.loads(proc.stdout.readline())
            assert set(urls) == {"records", "rates", "rates_fallback", "ledger", "control"}
            body = httpx.get(urls["records"] + "/records", params={"limit": 500}).json()
            assert len(body["items"]) == 30
            assert httpx.get(urls["rates"] + "/rates?base=EUR").status_code >= 500
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_keep_alive_is_fast() -> None:
    with Sandbox(n_records=2000) as sb, httpx.Client(timeout=5.0) as client:
        started = time.perf_counter()
        for _ in range(200):
            assert page(client, sb, 500).status_code == 200
        for i in range(200):
            assert post_batch(client, sb, f"k{i}", batch(f"b{i}", "r-000001")).status_code == 201
        elapsed = time.perf_counter() - started
    # Nagle + delayed ACK alone would cost 400 x 40 ms = 16 s; allow CI noise above ~1 s.
    assert elapsed < 5.0, elapsed
