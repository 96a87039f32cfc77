"""Importing a flow, block or deployment module does nothing: no socket, no block load.

Each module is imported in a fresh interpreter whose audit hook refuses every network call
(`socket.connect`, `socket.bind`, `socket.getaddrinfo`), so a module that reaches a server,
a database or a block document at import time fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flows", "blocks", "deployments", "toolkit")

GUARD = """
import sys
def refuse(event, args):
    if event in ("socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto"):
        raise RuntimeError(f"network at import time: {event} {args!r}")
sys.addaudithook(refuse)
import importlib
importlib.import_module(sys.argv[1])
"""


def modules() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_every_package_is_covered() -> None:
    assert {"flows.ledger_sync", "blocks.http_service", "deployments.demo"} <= set(modules())


@pytest.mark.parametrize("module", modules())
def test_import_opens_no_socket(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", GUARD, module], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_guard_catches_a_connection() -> None:
    code = GUARD.replace(
        "importlib.import_module(sys.argv[1])",
        "import socket\nsocket.create_connection(('127.0.0.1', 9))",
    )
    result = subprocess.run([sys.executable, "-c", code, "x"], capture_output=True, text=True)
    assert "network at import time" in result.stderr
