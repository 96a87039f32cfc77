"""A Docker engine, a registry and a base image for tests/docker: the machine's when it has
them, else started or made here.

Scenario: `make test-docker` builds, pushes and runs the Docker variants for real, on a laptop
whose Docker already runs and on this project's CI machines, which have Debian's Docker
packages (`make test-docker` installs them) but no engine running and no Docker Hub.

- Engine: the one at `DOCKER_HOST` (or /var/run/docker.sock) when it answers. Else, as root,
  Debian's `dockerd` with a data root kept between runs under STATE (image layers and the
  build cache: a second run builds from cache), an exec root and socket of its own under RUN,
  and `--iptables=false --bridge=none`: containers use the host's network, as the pool's
  `network_mode` says (deployments/docker_pool.py). It is stopped at the end.
- Registry: Debian's `docker-registry` on a free loopback port, blobs kept under STATE (a
  second push sends no layer twice). Docker allows plain HTTP to registries on 127.0.0.0/8.
- Base image: `RESILIENT_FLOWS_TEST_DOCKER_BASE` when set (`prefecthq/prefect:3.9.1-python3.11`
  on a machine that reaches Docker Hub). Else BASE_DOCKERFILE on a Debian bookworm that
  `debootstrap --variant=minbase` makes once (DEBIAN_IMAGE): a venv with pip, and a wheelhouse
  of the project's pinned dependencies that this venv's own pip builds, so that markers are
  judged by the Python that installs them (bookworm's 3.11.2 needs `async-timeout`, which
  the lock, frozen on a newer 3.11, lacks). Pip there installs from the wheelhouse only: the
  project's Dockerfile then builds offline, as behind a company's package mirror. Making it
  reaches PyPI through the host's CA bundle, handed to that one build step.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deployments.stack import free_port
from tests.helpers import ROOT
from tests.helpers.polling import poll_until

STATE = Path("/var/lib/resilient-flows")
RUN = Path("/run/resilient-flows-docker")
DEBIAN_IMAGE = "resilient-flows-debian:bookworm"
BASE_IMAGE = "resilient-flows-base:local"
BASE_DOCKERFILE = ROOT / "tests" / "docker" / "base.Dockerfile"
DEBIAN_MIRROR = os.environ.get("RESILIENT_FLOWS_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def client(docker_host: str) -> Any:
    """A docker-py client of the engine at `docker_host` (docker-py: prefect-docker's own)."""
    import docker

    return docker.DockerClient(base_url=docker_host, timeout=600)


def answers(docker_host: str) -> bool:
    try:
        return bool(client(docker_host).ping())
    except Exception:  # any failure to reach it means: no engine there
        return False


@contextlib.contextmanager
def docker_engine() -> Iterator[str]:
    """The `DOCKER_HOST` of an engine that answers: the machine's, or one started here."""
    for candidate in (os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock"):
        if candidate and answers(candidate):
            yield candidate
            return
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        raise RuntimeError(
            "no Docker engine answers (DOCKER_HOST, /var/run/docker.sock) and none can be "
            "started here: that needs root and Debian's docker.io (make test-docker installs it)"
        )
    docker_host = f"unix://{RUN}/docker.sock"
    if answers(docker_host):  # an engine an earlier run left behind: used, then stopped
        try:
            yield docker_host
        finally:
            pid = int((RUN / "dockerd.pid").read_text())
            os.kill(pid, signal.SIGTERM)
            poll_until(lambda: not Path(f"/proc/{pid}").exists(), 60, what="dockerd's end")
            unmount_namespaces()
        return
    (STATE / "docker").mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    (RUN / "dockerd.pid").unlink(missing_ok=True)
    log = (RUN / "dockerd.log").open("ab")
    engine = subprocess.Popen(
        [
            "dockerd",
            "--iptables=false",
            "--bridge=none",
            f"--data-root={STATE / 'docker'}",
            f"--exec-root={RUN / 'exec'}",
            f"--pidfile={RUN / 'dockerd.pid'}",
            f"--host={docker_host}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        poll_until(lambda: answers(docker_host) or engine.poll() is not None, 60, what="dockerd up")
        if engine.poll() is not None:
            raise RuntimeError(f"dockerd exited {engine.returncode}: see {RUN / 'dockerd.log'}")
        yield docker_host
    finally:
        engine.terminate()
        try:
            engine.wait(timeout=60)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()
        unmount_namespaces()


def unmount_namespaces() -> None:
    """The network namespace files dockerd leaves mounted under its exec root on exit."""
    for namespace in (RUN / "exec" / "netns").glob("*"):
        subprocess.run(["umount", str(namespace)], check=False, capture_output=True)


@contextlib.contextmanager
def registry() -> Iterator[str]:
    """`127.0.0.1:PORT` of a registry (Debian's docker-registry) until the block ends."""
    import urllib.request

    port = free_port()
    (STATE / "registry").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as config_dir:
        config = Path(config_dir) / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {STATE / 'registry'}}}}}\n"
            f"http: {{addr: '127.0.0.1:{port}'}}\n"
        )
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                    return True
            except OSError:
                return process.poll() is not None

        try:
            poll_until(up, 30, what="docker-registry up")
            if process.poll() is not None:
                raise RuntimeError(f"docker-registry exited {process.returncode}")
            yield f"127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=30)


def base_image(docker_host: str) -> str:
    """The image the project's Dockerfile is built on here (see the module's docstring)."""
    if os.environ.get("RESILIENT_FLOWS_TEST_DOCKER_BASE"):
        return os.environ["RESILIENT_FLOWS_TEST_DOCKER_BASE"]
    engine = client(docker_host)
    if not engine.images.list(name=DEBIAN_IMAGE):
        import_debian(engine)
    with tempfile.TemporaryDirectory() as context:
        for name in ("pyproject.toml", "requirements.lock", "README.md"):
            shutil.copy(ROOT / name, context)
        shutil.copy(HOST_CA_BUNDLE, Path(context) / "ca-certificates.crt")
        shutil.copy(BASE_DOCKERFILE, Path(context) / "Dockerfile")
        # Cached after the first time: only a changed lock file builds the wheelhouse again.
        engine.images.build(path=context, tag=BASE_IMAGE, network_mode="host", rm=True)
    return BASE_IMAGE


def import_debian(engine: Any) -> None:
    """DEBIAN_IMAGE from `debootstrap` (about a minute; once per machine, kept in STATE)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as work:
        rootfs = Path(work) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for unneeded in ("usr/share/doc", "usr/share/man", "usr/share/locale", "var/cache/apt"):
            shutil.rmtree(rootfs / unneeded, ignore_errors=True)
        archive = Path(work) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        repository, tag = DEBIAN_IMAGE.split(":")
        engine.api.import_image_from_file(str(archive), repository=repository, tag=tag)
