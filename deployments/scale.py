"""The scale profile's stack: a highly available Prefect on PostgreSQL and Redis, on one machine.

Scenario: before a team runs the project on many machines it wants to see it there: a
Prefect server on PostgreSQL with several API replicas behind it, Redis between them, workers
that reach different replicas, results and checkpoints in object storage every worker reads.

Solution: `ScaleStack` starts, one after another, what Prefect's guide "How to scale
self-hosted Prefect" describes, with the settings of the `scale` profile
(deployments/profiles.toml) exported to each part:
- PostgreSQL: the server's database and the ledger index's, created if missing, the server's
  migrated once (`prefect server database upgrade -y`) before any replica starts;
- two API replicas (`prefect server start --no-services`), started one after the other (two
  starting together race on a start-up insert and one dies);
- a load balancer in front of them (deployments/balancer.py, HAProxy): every client
  (workers, flow runs, the services, the tests) talks to it, and it sends each request to a
  replica that passes its health check, so a stopped replica is out of rotation within two
  seconds while Prefect's client retries what failed meanwhile;
- one background-services process (`prefect server services start`): scheduler, late runs,
  triggers and automations (the crashed-run detection), event persistence;
- Redis (prefect-redis) for messaging, causal ordering and concurrency leases;
- an S3-compatible object store for results, checkpoints and background tasks' parameters:
  moto's server here (`moto[s3]`, the `scale` extra), saved as the prefect-aws S3Bucket block
  that PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK names; in production the same block saved
  against S3 or MinIO, and nothing of this module runs;
- process workers on the `local-process` pool and a task worker.
Every part is a process group of its own, so a test can kill a worker with its flow runs or
stop a replica (and start either again); `stop()` ends them all, workers first. The object
store (deployments/object_store.py) keeps its objects in memory: results of an earlier
stack's runs are gone when it stops (the databases are kept).

How to run:
    make up-scale                        # or: python -m deployments up --profile scale
    with ScaleStack(home, profile_settings("scale")) as stack: stack.api_url
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from deployments.balancer import balancer_config, haproxy_binary, replica_stats
from deployments.object_store import save_results_block, wait_answering
from deployments.stack import (
    ServerProcess,
    free_port,
    prefect_cli,
    start_server,
    stop_group,
    wait_healthy,
)

POOL = "local-process"


@dataclass
class Process:
    """A part of the stack: a process group of its own, its log, the API it talks to."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    api_url: str = ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> None:
        """Signal the whole group (a worker's flow runs too); SIGKILL what outlives `timeout`."""
        stop_group(self.process, sig, timeout)


@dataclass
class ScaleStack:
    """Everything the scale profile runs; `start()` brings it up, `stop()` ends it."""

    home: Path
    settings: Mapping[str, str]
    replica_count: int = 2
    worker_count: int = 3
    worker_limit: int = 8
    fresh: bool = False
    """Drop both databases first (the tests' stack; never the default)."""

    replicas: list[ServerProcess] = field(default_factory=list)
    balancer: Process | None = None
    services: Process | None = None
    object_store: Process | None = None
    workers: list[Process] = field(default_factory=list)
    task_workers: list[Process] = field(default_factory=list)
    _context: ExitStack = field(default_factory=ExitStack)

    def __enter__(self) -> ScaleStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def api_urls(self) -> list[str]:
        """The replicas' own URLs (behind the balancer)."""
        return [replica.api_url for replica in self.replicas]

    @property
    def api_url(self) -> str:
        """The balancer's API URL: what every client of the stack uses."""
        assert self.balancer is not None, "the stack is not started"
        return self.balancer.api_url

    def start(self) -> ScaleStack:
        """Databases, replicas, services, object store, blocks; workers via `start_workers`.

        Exports the profile's settings to this process until `stop`, so whatever it calls
        next (deploy, block saves, flow runs) uses them; PREFECT_API_URL is the balancer's. A
        Prefect imported earlier read its settings then: this process's client is given the
        new ones (a settings context, left in `stop`).
        """
        self.home.mkdir(parents=True, exist_ok=True)
        self._context.callback(restore_environment, dict(os.environ))
        os.environ.update(self.settings)
        os.environ["PREFECT_HOME"] = str(self.home)
        check_redis(self.settings)
        server_url = self.settings["PREFECT_API_DATABASE_CONNECTION_URL"]
        for url in (server_url, self.settings["RESILIENT_FLOWS_LEDGER_INDEX_URL"]):
            ensure_database(url, fresh=self.fresh)
        migrate(self.home)
        balancer_port = free_port()
        balancer_url = f"http://127.0.0.1:{balancer_port}/api"
        for number in range(self.replica_count):
            # One after the other: replicas started together race on a start-up insert.
            self.replicas.append(self._start_replica(number, balancer_url))
        self.balancer = self._start_balancer(balancer_port)
        os.environ["PREFECT_API_URL"] = self.api_url
        self._context.enter_context(settings_from_environment())
        self.services = self._spawn(
            "services", [prefect_cli(), "server", "services", "start"], self.api_url
        )
        self.object_store = self._start_object_store()
        return self

    def start_workers(self) -> None:
        """Process workers spread over the replicas, and a task worker (call after deploying)."""
        for number in range(self.worker_count):
            self.workers.append(self.start_worker(number))
        command = [sys.executable, "-m", "flows.message_queue_worker"]
        self.task_workers.append(self._spawn("task-worker-0", command, self.api_url))

    def start_worker(self, number: int) -> Process:
        """Process worker `number` (a machine's, or its replacement's); its log goes on in the
        same file."""
        command = [prefect_cli(), "worker", "start", "--pool", POOL]
        command += ["--name", f"scale-worker-{number}", "--limit", str(self.worker_limit)]
        return self._spawn(f"worker-{number}", command, self.api_url)

    def restart_replica(self, number: int) -> None:
        """Replica `number` started again on its port (a stopped one's replacement): the
        balancer puts it back in rotation once it passes two health checks."""
        self.replicas[number].stop()
        self.replicas[number] = self._start_replica(number, self.api_url)

    def balancer_servers(self) -> dict[str, dict[str, str]]:
        """The balancer's view of each replica (`api-0`, ...): status (UP, DOWN), requests."""
        return replica_stats(self.home / "haproxy.sock")

    def stop(self) -> None:
        """Workers first (their runs end with them), then services, replicas, object store."""
        for part in [*self.task_workers, *self.workers]:
            part.stop()
        if self.services is not None:
            self.services.stop()
        if self.balancer is not None:
            self.balancer.stop()
        for replica in self.replicas:
            replica.stop()
        if self.object_store is not None:
            self.object_store.stop()
        self._context.close()

    def _spawn(self, name: str, command: list[str], api_url: str) -> Process:
        log = self.home / f"{name}.log"
        env = {**os.environ, "PREFECT_API_URL": api_url}
        with log.open("ab") as out:
            process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return Process(name, process, log, api_url)

    def _start_replica(self, number: int, balancer_url: str) -> ServerProcess:
        port = None
        if number < len(self.replicas):
            port = urlsplit(self.replicas[number].api_url).port
        return start_server(
            self.home,
            options=("--no-services",),
            log_name=f"api-{number}.log",
            port=port,
            ui_api_url=balancer_url,  # the UI any replica serves calls every replica
        )

    def _start_balancer(self, port: int) -> Process:
        config = self.home / "haproxy.cfg"
        config.write_text(balancer_config(port, self.api_urls, self.home / "haproxy.sock"))
        balancer = self._spawn("balancer", [haproxy_binary(), "-db", "-f", str(config)], "")
        balancer.api_url = f"http://127.0.0.1:{port}/api"
        wait_healthy(balancer.api_url, balancer.process, 30)
        return balancer

    def _start_object_store(self) -> Process:
        port = free_port()
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        store = self._spawn("object-store", command, "")
        store.api_url = f"http://127.0.0.1:{port}"
        wait_answering(store.api_url, store.process, 60)
        save_results_block(store.api_url)
        return store


def restore_environment(saved: Mapping[str, str]) -> None:
    os.environ.clear()
    os.environ.update(saved)


@contextmanager
def settings_from_environment() -> Iterator[None]:
    """Prefect's settings read again from the environment, for this process, in this block."""
    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import Settings

    with SettingsContext(profile=get_settings_context().profile, settings=Settings()):
        yield


def check_redis(settings: Mapping[str, str]) -> None:
    """Fail early, naming the setting, when the profile's Redis does not answer."""
    import redis

    host = settings["PREFECT_REDIS_MESSAGING_HOST"]
    port = int(settings["PREFECT_REDIS_MESSAGING_PORT"])
    try:
        redis.Redis(host=host, port=port, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise RuntimeError(
            f"no Redis at {host}:{port} (PREFECT_REDIS_MESSAGING_HOST/PORT): {exc}"
        ) from None


def ensure_database(url: str, *, fresh: bool = False) -> None:
    """Create the PostgreSQL database of SQLAlchemy URL `url` if missing (dropped first if
    `fresh`), through the server's maintenance database."""
    import sqlalchemy as sa

    target = sa.make_url(url)
    admin = sa.create_engine(
        target.set(drivername="postgresql+psycopg", database="postgres"),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
    )
    name = target.database
    try:
        with admin.connect() as conn:
            if fresh:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            exists = conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()


def migrate(home: Path) -> None:
    """`prefect server database upgrade -y` on the profile's database, once, before any replica."""
    with (home / "migrate.log").open("ab") as log:
        subprocess.run(
            [prefect_cli(), "server", "database", "upgrade", "-y"],
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
