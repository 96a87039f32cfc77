"""One scale-profile stack per session (deployments/scale.py), as `make up-scale` starts it.

It uses the session's PostgreSQL and Redis (tests/helpers/services.py, as `make test`): a
Prefect database and a ledger-index database of its own, dropped and created afresh, and the
Redis database below the session's for Prefect's messaging. The stack exports its settings
and gives this process's Prefect client a settings context of them: the tests talk to it
through its load balancer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scale.helpers import fresh_scale_stack


@pytest.fixture(scope="session")
def scale_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The stack, its blocks and deployments deployed, three workers (at most 4 runs each)."""
    from deployments.up import provision

    home = Path(tmp_path_factory.mktemp("scale-home"))
    with fresh_scale_stack(home, worker_limit=4) as scale:
        deployed = provision(home, unused_sandbox_urls(), "http://127.0.0.1:9/callbacks")
        assert deployed, (home / "deploy.log").read_text()[-3000:]
        scale.start_workers()
        yield scale


def unused_sandbox_urls() -> dict[str, str]:
    """Default sandbox blocks pointing nowhere: every test saves blocks of its own sandboxes."""
    from deployments.stack import SANDBOX_BLOCKS

    return {service: "http://127.0.0.1:9" for service in SANDBOX_BLOCKS}
