"""One real Prefect server (the test harness) per session, and a fresh sandbox per test.

Prefect reads its settings when first imported, so the environment is set here, before any
test module imports it: state and result storage in a temporary directory, never ~/.prefect.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="resilient-flows-tests-"))
os.environ.pop("PREFECT_API_URL", None)
os.environ.update(
    {
        "PREFECT_HOME": str(_SESSION_DIR / "home"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(_SESSION_DIR / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.3",
        # A Redis database of the tests' own, emptied before each test (circuit breakers).
        "RESILIENT_FLOWS_REDIS_URL": "redis://127.0.0.1:6379/15",
    }
)

import pytest  # noqa: E402

from sandbox.server import Sandbox  # noqa: E402


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """The API URL of a real Prefect server on temporary SQLite, shared by the session."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        from deployments.stack import register_blocks

        os.environ["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
        try:
            register_blocks()
            yield str(PREFECT_API_URL.value())
        finally:
            os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture
def result_storage(tmp_path: Path) -> Iterator[Path]:
    """A result storage directory of this test's own: no checkpoint leaks between tests."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    path = tmp_path / "storage"
    with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: path}):
        yield path


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    import redis

    redis.Redis.from_url(os.environ["RESILIENT_FLOWS_REDIS_URL"]).flushdb()
    with Sandbox(n_records=1000, invalid_fraction=0.05, seed=11) as running:
        yield running


@pytest.fixture
def sandbox_blocks(prefect_server: str, sandbox: Sandbox, result_storage: Path) -> Sandbox:
    """The default HttpService block documents pointed at this test's sandbox."""
    from deployments.stack import save_sandbox_blocks

    save_sandbox_blocks(sandbox.urls)
    return sandbox
