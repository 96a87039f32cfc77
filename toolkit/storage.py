"""List and delete what result storage holds, by key prefix: local directories and S3 buckets.

Scenario: a nightly sync writes checkpoints to Prefect's result storage, and Prefect never
deletes result storage, so a year of nights fills the disk or the bucket. Deleting the
objects no sync needs any more means listing them, with their sizes and ages, and deleting
a group of them at once.

Solution: Prefect's storage blocks read and write one path at a time and cannot list or
delete, so this module does both for the two kinds of storage the profiles use: a
`LocalFileSystem` (the local profile's directory, Prefect's default) through the file system,
and prefect-aws's `S3Bucket` (the scale profile's) through the block's own boto3 client,
within its `bucket_folder`. Keys are the storage's paths relative to its root, `/`-separated,
as written by `write_path`. Another kind of block is refused with a clear error.

How to run
    for stored in objects("walk-page/"):
        print(stored.key, stored.size, stored.modified)
    delete_prefix("walk-page/v5/<sync>/<walk>/")
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect.filesystems import LocalFileSystem, WritableFileSystem

S3_DELETE_CHUNK = 1000  # keys per DeleteObjects request, S3's limit


class UnsupportedStorage(Exception):
    """The result storage is a kind of block this module cannot list."""


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the storage's root, "/"-separated
    size: int  # bytes
    modified: datetime  # UTC


def current_storage() -> WritableFileSystem:
    """The storage block this process's results go to (Prefect's default if none is set)."""
    from prefect.results import get_default_result_storage

    return get_default_result_storage(_sync=True)


def objects(prefix: str = "", storage: WritableFileSystem | None = None) -> Iterator[StoredObject]:
    """Every object whose key starts with `prefix`, in no particular order."""
    storage = storage or current_storage()
    if isinstance(storage, LocalFileSystem):
        yield from _local_objects(_local_root(storage), prefix)
    elif _is_s3(storage):
        yield from _s3_objects(storage, prefix)
    else:
        raise _unsupported(storage)


def delete(keys: Iterable[str], storage: WritableFileSystem | None = None) -> int:
    """Delete these objects (a missing one is no error); how many keys were asked for."""
    storage = storage or current_storage()
    keys = list(keys)
    if isinstance(storage, LocalFileSystem):
        root = _local_root(storage)
        for key in keys:
            (root / key).unlink(missing_ok=True)
    elif _is_s3(storage):
        client = storage.credentials.get_client("s3")
        for start in range(0, len(keys), S3_DELETE_CHUNK):
            chunk = keys[start : start + S3_DELETE_CHUNK]
            client.delete_objects(
                Bucket=storage.bucket_name,
                Delete={"Objects": [{"Key": _s3_key(storage, key)} for key in chunk]},
            )
    else:
        raise _unsupported(storage)
    return len(keys)


def delete_prefix(prefix: str, storage: WritableFileSystem | None = None) -> int:
    """Delete every object under `prefix` (a folder: ending in "/"); how many there were."""
    if not prefix.endswith("/"):
        raise ValueError(f"prefix {prefix!r}: a folder ends in '/'")
    storage = storage or current_storage()
    if isinstance(storage, LocalFileSystem):
        folder = _local_root(storage) / prefix
        count = sum(1 for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0
        shutil.rmtree(folder, ignore_errors=True)
        return count
    return delete([stored.key for stored in objects(prefix, storage)], storage)


def _local_root(storage: LocalFileSystem) -> Path:
    return storage._resolve_path("")


def _local_objects(root: Path, prefix: str) -> Iterator[StoredObject]:
    # The deepest directory the prefix names, then the keys under it that start with it.
    start = root.joinpath(*prefix.split("/")[:-1])
    if not start.is_dir():
        return
    for path in start.rglob("*"):
        key = path.relative_to(root).as_posix()
        if key.startswith(prefix):
            try:
                stat = path.stat()
            except FileNotFoundError:  # deleted meanwhile
                continue
            if path.is_file():
                modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                yield StoredObject(key, stat.st_size, modified)


def _is_s3(storage: WritableFileSystem) -> bool:
    return type(storage).__name__ == "S3Bucket"  # prefect-aws, imported only where it is used


def _s3_key(storage: Any, key: str) -> str:
    folder = storage.bucket_folder.strip("/")
    return f"{folder}/{key}" if folder else key


def _s3_objects(storage: Any, prefix: str) -> Iterator[StoredObject]:
    client = storage.credentials.get_client("s3")
    folder = storage.bucket_folder.strip("/")
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=storage.bucket_name, Prefix=_s3_key(storage, prefix)
    )
    for page in pages:
        for item in page.get("Contents", []):
            key = item["Key"][len(folder) + 1 :] if folder else item["Key"]
            yield StoredObject(key, item["Size"], item["LastModified"].astimezone(UTC))


def _unsupported(storage: WritableFileSystem) -> UnsupportedStorage:
    return UnsupportedStorage(
        f"result storage {type(storage).__name__} cannot be listed here: "
        "LocalFileSystem and S3Bucket can"
    )
