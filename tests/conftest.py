"""One real Prefect server (the test harness) per session, and a fresh sandbox per test.

Prefect reads its settings when first imported, so the environment is set here, before any
test module imports it: state and result storage in a temporary directory, never ~/.prefect.
The Redis and PostgreSQL the tests use are the machine's or the suite's own
(tests/helpers/services.py says which, and how to choose).
"""

from __future__ import annotations

import contextlib
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
    }
)

import pytest  # noqa: E402

from sandbox.receiver import Receiver  # noqa: E402
from sandbox.server import Sandbox  # noqa: E402
from tests.helpers import services  # noqa: E402

_SERVICES = contextlib.ExitStack()
_USED: list[services.Service] = []


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """The session's Redis, emptied before each test (circuit breakers), chosen before any
    test module is imported: they read settings on import, and every process a test starts
    inherits RESILIENT_FLOWS_REDIS_URL. RESILIENT_FLOWS_TEST_REDIS_URL gives two suites
    running side by side on one Redis a database each."""
    try:
        services.check_settings()  # a wrong PostgreSQL URL too, before any test runs
        redis_service = _SERVICES.enter_context(services.redis_server(_SESSION_DIR))
    except services.ServiceError as exc:
        raise pytest.UsageError(str(exc)) from None
    _USED.append(redis_service)
    os.environ["RESILIENT_FLOWS_REDIS_URL"] = redis_service.url
    from toolkit.config import settings

    settings.cache_clear()  # whatever read the settings before this reads them again


def pytest_sessionfinish(session: pytest.Session) -> None:
    _SERVICES.close()  # stops the servers the suite started, after every fixture's teardown


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for service in _USED:
        terminalreporter.write_line(f"{service}")


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
def result_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The durable state of this test's own syncs: a result storage directory (checkpoints)
    and a ledger index (what each ledger holds), so nothing leaks between tests. Set in the
    environment too, for the sync processes a test starts."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    from toolkit.config import settings

    path = tmp_path / "storage"
    monkeypatch.setenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(path))
    monkeypatch.setenv("RESILIENT_FLOWS_LEDGER_INDEX_URL", f"sqlite:///{tmp_path}/index.sqlite")
    settings.cache_clear()
    with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: path}):
        yield path
    settings.cache_clear()


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


@pytest.fixture
def alert_receiver(prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """Alerts go through a real Custom Webhook notification block to a loopback receiver."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from toolkit.config import settings

    receiver = Receiver()
    CustomWebhookNotificationBlock(
        name="test-alerts",
        url=f"{receiver.url}/alerts",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    ).save("test-alerts", overwrite=True)
    monkeypatch.setenv("RESILIENT_FLOWS_ALERT_BLOCK", "custom-webhook/test-alerts")
    settings.cache_clear()
    yield receiver
    settings.cache_clear()
    receiver.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this session's own on its PostgreSQL server, dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(services.postgres_server())
        except services.ServiceError as exc:
            pytest.fail(str(exc), pytrace=False)
        _USED.append(server)
        name = f"resilient_flows_test_{uuid.uuid4().hex[:8]}"
        admin = services.admin_engine(server.url)
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield f"{server.url}/{name}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each database the project's own state can live in: a SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.sqlite"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def stream_queue() -> Iterator[object]:
    """A StreamQueue on the session's Redis, on a stream of this test's own; it and its dead
    letters, and the reply stream "replies", are deleted after the test."""
    import uuid

    import redis

    from toolkit.stream_queue import StreamQueue

    client = redis.Redis.from_url(os.environ["RESILIENT_FLOWS_REDIS_URL"], decode_responses=True)
    queue = StreamQueue(client, f"test-queue-{uuid.uuid4().hex[:8]}")
    yield queue
    client.delete(queue.name, queue.dead_letters, "replies")
