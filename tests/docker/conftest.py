"""One Docker engine, registry and base image for the session (tests/helpers/docker.py): the
machine's when it has them, else started or made here, and stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.docker import base_image, docker_engine, registry

pytest.register_assert_rewrite("tests.docker.helpers")  # its asserts explain themselves too


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    with docker_engine() as host:
        yield host


@pytest.fixture(scope="session")
def registry_address(docker_host: str) -> Iterator[str]:
    with registry() as address:
        yield address


@pytest.fixture(scope="session")
def docker_base(docker_host: str) -> str:
    """The image the project's Dockerfile is built on (the Prefect variable docker_base_image)."""
    return base_image(docker_host)
