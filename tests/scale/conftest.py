"""One scale-profile stack per session (deployments/scale.py), as `make up-scale` starts it.

It uses the session's PostgreSQL and Redis (tests/helpers/services.py, as `make test`): a
Prefect database and a ledger-index database of its own, dropped and created afresh, and the
Redis database below the session's for Prefect's messaging. The stack exports its settings
and gives this process's Prefect client a settings context of them: the tests talk to its
first replica.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import ROOT, services
from tests.scale.helpers import scale_settings


@pytest.fixture(scope="session")
def scale_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The stack, its blocks and deployments deployed, three workers (at most 4 runs each)."""
    from deployments.scale import ScaleStack

    home = tmp_path_factory.mktemp("scale-home")
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(services.postgres_server())
        settings = scale_settings(postgres.url, os.environ["RESILIENT_FLOWS_REDIS_URL"])
        messaging = redis.Redis(
            host=settings["PREFECT_REDIS_MESSAGING_HOST"],
            port=int(settings["PREFECT_REDIS_MESSAGING_PORT"]),
            db=int(settings["PREFECT_REDIS_MESSAGING_DB"]),
        )
        messaging.flushdb()  # an earlier session's streams and leases
        os.environ["PWD"] = str(ROOT)  # prefect.yaml's pull step: this checkout
        scale = stack.enter_context(ScaleStack(Path(home), settings, worker_limit=4, fresh=True))
        from deployments.up import provision

        deployed = provision(Path(home), unused_sandbox_urls(), "http://127.0.0.1:9/callbacks")
        assert deployed, (Path(home) / "deploy.log").read_text()[-3000:]
        scale.start_workers()
        yield scale


def unused_sandbox_urls() -> dict[str, str]:
    """Default sandbox blocks pointing nowhere: every test saves blocks of its own sandboxes."""
    from deployments.stack import SANDBOX_BLOCKS

    return {service: "http://127.0.0.1:9" for service in SANDBOX_BLOCKS}
