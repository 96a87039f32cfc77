"""The index's plain values: a ledger's key is stable, and a flow that names them imports no
database client until it opens the index."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT
from toolkit.ledger_claims import ledger_key

DEFERRED = ["sqlalchemy", "psycopg", "redis", "prefect_aws", "prefect_docker", "boto3"]


def test_a_ledgers_key_is_stable_across_releases() -> None:
    """Existing indexes and locks are keyed on it: the same ledger, the same key, always."""
    assert ledger_key("http://127.0.0.1:8000") == "63767aa5615dabadd32b93fdf0db0c71"
    assert ledger_key("http://127.0.0.1:8001") != ledger_key("http://127.0.0.1:8000")


def test_importing_the_flagship_imports_no_database_or_cloud_client() -> None:
    probe = (
        "import sys, json, flows.ledger_sync; "
        f"print(json.dumps([m for m in {DEFERRED!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.splitlines()[-1]) == []
