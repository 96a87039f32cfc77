from __future__ import annotations

from flows.ledger.models import Batch, Entry
from toolkit.idempotency import business_key, content_hash


def test_keys_depend_on_content_only() -> None:
    assert content_hash({"b": 1, "a": [1, 2]}) == content_hash({"a": [1, 2], "b": 1})
    assert content_hash("x") != content_hash("y")
    assert business_key("page", "u", None, version=2).startswith("page/v2/")
    assert business_key("page", "u", version=1)[8:] == business_key("page", "u", version=2)[8:]


def test_batch_identity_is_a_function_of_its_entries() -> None:
    entries = [Entry(record_id="r-1", account="acc-1", amount_eur="1.00")]
    same, other = Batch.of(list(entries)), Batch.of([*entries, entries[0]])
    assert Batch.of(entries).batch_id == same.batch_id
    assert Batch.of(entries).idempotency_key == same.idempotency_key
    assert other.batch_id != same.batch_id and other.idempotency_key != same.idempotency_key
    assert same.idempotency_key.startswith("ledger-sync-v2-")
