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
- one background-services process (`prefect server services start`): scheduler, late runs,
  triggers and automations (the crashed-run detection), event persistence;
- Redis (prefect-redis) for messaging, causal ordering and concurrency leases;
- an S3-compatible object store for results, checkpoints and background tasks' parameters:
  moto's server here (`moto[s3]`, the `scale` extra), saved as the prefect-aws S3Bucket block
  that PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK names; in production the same block saved
  against S3 or MinIO, and nothing of this module runs;
- process workers on the `local-process` pool, spread over the replicas, and a task worker.
Every part is a process group of its own, so a test can kill a worker with its flow runs or
stop a replica; `stop()` ends them all, workers first. The object store keeps its objects in
memory: results of an earlier stack's runs are gone when it stops (the databases are kept).

How to run:
    make up-scale                        # or: python -m deployments up --profile scale
    with ScaleStack(home, profile_settings("scale")) as stack: stack.workers[0].api_url
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from deployments.stack import ServerProcess, free_port, prefect_cli, start_server

RESULTS_BLOCK = "resilient-flows-results"
"""The S3Bucket document the scale profile's storage settings name (profiles.toml)."""

CREDENTIALS_BLOCK = "resilient-flows-object-store"
BUCKET = "resilient-flows"
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
        if self.alive():
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


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
        return [replica.api_url for replica in self.replicas]

    def start(self) -> ScaleStack:
        """Databases, replicas, services, object store, blocks; workers via `start_workers`.

        Exports the profile's settings to this process, so whatever it calls next (deploy,
        block saves, flow runs) uses them; PREFECT_API_URL is the first replica's. A Prefect
        imported earlier read its settings then: this process's client is given the new ones
        (a settings context, left in `stop`).
        """
        self.home.mkdir(parents=True, exist_ok=True)
        os.environ.update(self.settings)
        os.environ["PREFECT_HOME"] = str(self.home)
        check_redis(self.settings)
        server_url = self.settings["PREFECT_API_DATABASE_CONNECTION_URL"]
        for url in (server_url, self.settings["RESILIENT_FLOWS_LEDGER_INDEX_URL"]):
            ensure_database(url, fresh=self.fresh)
        migrate(self.home)
        for number in range(self.replica_count):
            # One after the other: replicas started together race on a start-up insert.
            self.replicas.append(
                start_server(self.home, options=("--no-services",), log_name=f"api-{number}.log")
            )
        os.environ["PREFECT_API_URL"] = self.replicas[0].api_url
        self._context.enter_context(settings_from_environment())
        self.services = self._spawn(
            "services", [prefect_cli(), "server", "services", "start"], self.replicas[0].api_url
        )
        self.object_store = self._start_object_store()
        return self

    def start_workers(self) -> None:
        """Process workers spread over the replicas, and a task worker (call after deploying)."""
        for number in range(self.worker_count):
            api_url = self.api_urls[number % len(self.api_urls)]
            command = [prefect_cli(), "worker", "start", "--pool", POOL]
            command += ["--name", f"scale-worker-{number}", "--limit", str(self.worker_limit)]
            self.workers.append(self._spawn(f"worker-{number}", command, api_url))
        command = [sys.executable, "-m", "flows.message_queue_worker"]
        self.task_workers.append(self._spawn("task-worker-0", command, self.api_urls[0]))

    def stop(self) -> None:
        """Workers first (their runs end with them), then services, replicas, object store."""
        for part in [*self.task_workers, *self.workers]:
            part.stop()
        if self.services is not None:
            self.services.stop()
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

    def _start_object_store(self) -> Process:
        port = free_port()
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        store = self._spawn("object-store", command, "")
        store.api_url = f"http://127.0.0.1:{port}"
        wait_answering(store.api_url, store.process, 60)
        save_results_block(store.api_url)
        return store


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


def wait_answering(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers, if not to a bare GET
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing answers at {url} after {timeout:.0f} s")


def save_results_block(endpoint_url: str) -> None:
    """The bucket at `endpoint_url`, and the S3Bucket document the profile's settings name."""
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket
    from pydantic import SecretStr

    # moto accepts any key; a real store's keys go in this SecretStr field, never in code.
    credentials = AwsCredentials(
        aws_access_key_id="resilient-flows",
        aws_secret_access_key=SecretStr("resilient-flows"),
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url),
    )
    credentials.save(CREDENTIALS_BLOCK, overwrite=True)
    session = credentials.get_boto3_session()
    client = session.client("s3", endpoint_url=endpoint_url)
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        client.create_bucket(Bucket=BUCKET)
    S3Bucket(bucket_name=BUCKET, credentials=credentials, bucket_folder="results").save(
        RESULTS_BLOCK, overwrite=True
    )
