"""The Redis and PostgreSQL the suite uses (tests/helpers/services.py), through the session's
fixtures and through the helper itself, against real servers.

Here, not in tests/helpers/: that package holds the helpers only, and this tests the suite's
own machinery rather than a project module, like tests/test_import_hygiene.py beside it. The
"nothing answers at the machine's address" path is shown by pointing that address at port 1,
never by stopping the machine's servers, which other suites may be using.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from deployments.stack import PROJECT_ROOT
from tests.helpers import services

NOTHING = "127.0.0.1:1"
"""An address where nothing listens (port 1 is privileged and unused here)."""

INCREMENT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture
def no_explicit_urls(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(services.REDIS_URL, raising=False)
    monkeypatch.delenv(services.POSTGRES_URL, raising=False)
    monkeypatch.delenv(services.MODE, raising=False)
    return monkeypatch


def child(code: str, **env: str) -> str:
    """What a separate Python process prints, started with this test's environment."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_sessions_redis_reaches_the_processes_a_test_starts() -> None:
    url = os.environ["RESILIENT_FLOWS_REDIS_URL"]
    client = redis.Redis.from_url(url)
    client.delete("test-services")
    sha = client.script_load(INCREMENT)
    code = (
        "import redis; from toolkit.config import settings; "
        "client = redis.Redis.from_url(settings().redis_url); "
        f"print(client.evalsha({sha!r}, 1, 'test-services', 5))"
    )
    assert child(code) == "5"
    assert client.get("test-services") == b"5"
    client.close()


def test_the_sessions_postgres_database_reaches_the_processes_a_test_starts(
    postgres_url: str,
) -> None:
    code = (
        "import sqlalchemy as sa; from toolkit.config import settings; "
        "engine = sa.create_engine(settings().ledger_index_url)\n"
        "with engine.begin() as conn:\n"
        "    conn.execute(sa.text('CREATE TABLE from_child (n int)'))\n"
        "    conn.execute(sa.text('INSERT INTO from_child VALUES (7)'))\n"
        "print('written')"
    )
    assert child(code, RESILIENT_FLOWS_LEDGER_INDEX_URL=postgres_url) == "written"
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT n FROM from_child")).scalar() == 7
        conn.execute(sa.text("DROP TABLE from_child"))


def test_own_redis_runs_the_breakers_scripts_and_stops_with_the_block(
    no_explicit_urls: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_explicit_urls.setenv(services.MODE, "own")
    with services.redis_server(tmp_path) as own:
        assert own.origin.startswith("our own") and ":6379/" not in own.url
        client = redis.Redis.from_url(own.url)
        sha = client.script_load(INCREMENT)  # the breaker's way: SCRIPT LOAD, then EVALSHA
        assert [client.evalsha(sha, 1, "k", 2) for _ in range(2)] == [2, 4]
        client.close()
    assert services.redis_problem(own.url) is not None


def test_auto_takes_the_redis_at_the_machines_address_when_one_answers(
    no_explicit_urls: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_explicit_urls.setenv(services.MODE, "own")
    with services.redis_server(tmp_path) as stand_in:
        no_explicit_urls.setattr(services, "MACHINE_REDIS", stand_in.url)
        no_explicit_urls.setenv(services.MODE, "auto")
        with services.redis_server(tmp_path) as chosen:
            assert (chosen.url, chosen.origin) == (stand_in.url, "the machine's")
        assert services.redis_problem(stand_in.url) is None  # not ours to stop


def test_auto_starts_a_redis_of_its_own_when_nothing_answers_at_the_machines_address(
    no_explicit_urls: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_explicit_urls.setattr(services, "MACHINE_REDIS", f"redis://{NOTHING}/15")
    with services.redis_server(tmp_path) as chosen:
        assert chosen.origin.startswith("our own")
        assert services.redis_problem(chosen.url) is None


def test_auto_starts_a_postgres_of_its_own_when_nothing_answers_and_removes_it_after(
    no_explicit_urls: pytest.MonkeyPatch,
) -> None:
    no_explicit_urls.setattr(services, "MACHINE_POSTGRES", f"postgresql+psycopg://{NOTHING}")
    with services.postgres_server() as own:
        assert own.origin.startswith("our own")
        engine = services.admin_engine(own.url)
        with engine.connect() as conn:
            conn.execute(sa.text('CREATE DATABASE "made_here"'))
            data = Path(conn.execute(sa.text("SHOW data_directory")).scalar_one())
        engine.dispose()
        assert data.is_dir()
    assert services.postgres_problem(own.url) is not None
    assert not data.parent.exists()


def test_an_explicit_url_wins_even_over_own(
    no_explicit_urls: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_explicit_urls.setenv(services.MODE, "own")
    with services.redis_server(tmp_path) as elsewhere:
        no_explicit_urls.setenv(services.REDIS_URL, elsewhere.url)
        with services.redis_server(tmp_path) as chosen:
            assert (chosen.url, chosen.origin) == (elsewhere.url, f"from {services.REDIS_URL}")


Server = Callable[[Path], AbstractContextManager[services.Service]]


@pytest.mark.parametrize(
    ("setting", "url", "server"),
    [
        (services.REDIS_URL, f"redis://{NOTHING}/0", services.redis_server),
        (
            services.POSTGRES_URL,
            f"postgresql+psycopg://postgres@{NOTHING}",
            lambda _: services.postgres_server(),
        ),
    ],
)
def test_an_explicit_url_where_nothing_answers_is_an_error_naming_the_setting(
    no_explicit_urls: pytest.MonkeyPatch, tmp_path: Path, setting: str, url: str, server: Server
) -> None:
    no_explicit_urls.setenv(setting, url)
    expected = f"^{re.escape(f'{setting}={url}')}: no .* answers there"
    with pytest.raises(services.ServiceError, match=expected), server(tmp_path):
        pass


def test_an_unknown_mode_is_an_error(no_explicit_urls: pytest.MonkeyPatch) -> None:
    no_explicit_urls.setenv(services.MODE, "machine")
    with pytest.raises(services.ServiceError, match=services.MODE):
        services.mode()


@pytest.mark.parametrize(
    ("setting", "url", "name"),
    [
        (services.REDIS_URL, f"redis://{NOTHING}/0", "Redis"),
        (services.POSTGRES_URL, f"postgresql+psycopg://postgres@{NOTHING}", "PostgreSQL"),
    ],
)
def test_a_wrong_url_stops_the_whole_session_at_once_with_its_name(
    setting: str, url: str, name: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_services.py", "-q"],
        env={**os.environ, setting: url},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert f"{setting}={url}: no {name} answers there" in output
    assert "passed" not in output and "skipped" not in output
