"""Fire-and-forget with polling: the job a caller starts and checks on later.

Scenario
    A caller (a web request, a CI step, another system) needs long work done but cannot
    hold a connection open for it. It wants a run id at once, the same run if it asks twice
    (a retried request must not start a second job), and later the result or a clear error.

Solution
    The work is a deployment; `deployments/trigger.py` starts it with an idempotency key
    (Prefect returns the existing run for a key it has seen) and returns the run id, and
    polls the run with backoff and an overall timeout. This module is the sample job: it
    takes a while, and fails on request, so both ends can be shown.

How to run
    make up   # or any server with this deployment and a worker (see README)
    python -m deployments.trigger run fire-and-forget/fire-and-forget --key order-42 \
        --param seconds=5 --wait
"""

from __future__ import annotations

import time
from typing import Annotated

from prefect import flow
from pydantic import Field


@flow(name="fire-and-forget", persist_result=True)
def slow_job(
    seconds: Annotated[float, Field(ge=0, le=3600)] = 3.0,
    fail: bool = False,
) -> str:
    """Work for a while; return a receipt, or fail on request.

    Args:
      seconds: How long the job works, in seconds, from 0 to 3600.

      fail: Fail at the end instead of returning a receipt, to show the error path.
    """
    time.sleep(seconds)
    if fail:
        raise RuntimeError(f"the job failed after {seconds} s, as asked")
    return f"done after {seconds} s"
