"""Listing and deleting result storage by prefix, on a LocalFileSystem block (the S3Bucket
side runs on the scale profile's object store: tests/scale)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem, RemoteFileSystem

from toolkit.storage import UnsupportedStorage, delete, delete_prefix, objects


@pytest.fixture
def storage(tmp_path: Path) -> LocalFileSystem:
    block = LocalFileSystem(basepath=str(tmp_path / "results"))
    for key, content in {
        "walk-page/v5/s1/w1/a": b"1",
        "walk-page/v5/s1/w1/b": b"22",
        "walk-page/v5/s1/w2/a": b"333",
        "walk-page/v4/old": b"4444",
        "sync/v5/s1": b"55555",
    }.items():
        block.write_path(key, content, _sync=True)
    (tmp_path / "beside-the-storage").write_text("not a result")
    return block


def keys(storage: LocalFileSystem, prefix: str = "") -> set[str]:
    return {stored.key for stored in objects(prefix, storage)}


def test_objects_lists_keys_sizes_and_times_under_a_prefix(storage: LocalFileSystem) -> None:
    assert keys(storage, "walk-page/v5/") == {
        "walk-page/v5/s1/w1/a",
        "walk-page/v5/s1/w1/b",
        "walk-page/v5/s1/w2/a",
    }
    assert keys(storage, "walk-page/v") == keys(storage, "walk-page/")  # not only folders
    assert len(keys(storage)) == 5
    (sync,) = objects("sync/", storage)
    assert sync.size == 5 and sync.modified.tzinfo is not None
    assert keys(storage, "nothing/") == set()


def test_delete_prefix_deletes_one_folder_and_counts_it(storage: LocalFileSystem) -> None:
    assert delete_prefix("walk-page/v5/s1/w1/", storage) == 2
    assert keys(storage, "walk-page/") == {"walk-page/v5/s1/w2/a", "walk-page/v4/old"}
    assert delete_prefix("walk-page/v5/s1/w1/", storage) == 0  # already gone: no error
    with pytest.raises(ValueError, match="ends in '/'"):
        delete_prefix("walk-page/v5/s1/w", storage)  # would match w2 too


def test_delete_deletes_the_keys_given(storage: LocalFileSystem) -> None:
    assert delete(["walk-page/v4/old", "sync/v5/s1", "missing"], storage) == 3
    assert keys(storage) == keys(storage, "walk-page/v5/")


def test_a_storage_that_cannot_be_listed_is_named() -> None:
    with pytest.raises(UnsupportedStorage, match="RemoteFileSystem"):
        list(objects("", RemoteFileSystem(basepath="memory://results")))
