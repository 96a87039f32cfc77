"""Task runners by configuration: threads on one machine, a Dask cluster across many.

Scenario: the fan-out flow submits one task per ledger batch. On a laptop, threads of the
flow-run process are all it needs; on the scale profile the same flow should spread its tasks
over a Dask cluster's workers, with no change to the flow.

Solution: `fan_out_runner(max_in_flight)` reads the settings RESILIENT_FLOWS_TASK_RUNNER and
RESILIENT_FLOWS_DASK_ADDRESS (set per profile in deployments/profiles.toml) and builds
Prefect's `ThreadPoolTaskRunner`, or prefect-dask's `DaskTaskRunner`: connected to the
scheduler at the address (a real cluster), or starting a local cluster for the run (one
worker process with `max_in_flight` threads). prefect-dask, not code of ours: it is Prefect's
own integration, which turns each submitted task into a Dask future and back. The choice is
`runner_spec`, a pure function. A task run on Dask crosses a process boundary: its arguments
are pickled (block names and batches, never open clients), and so is its result, which a
task that others must read persists to result storage (the object store on the scale
profile).

How to run:
    RESILIENT_FLOWS_TASK_RUNNER=dask python -m flows.fan_out max_in_flight=4
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

RunnerKind = Literal["threads", "dask"]


@dataclass(frozen=True)
class RunnerSpec:
    """Which task runner, with which options."""

    kind: RunnerKind
    options: dict[str, Any] = field(default_factory=dict)


def runner_spec(kind: RunnerKind, dask_address: str | None, max_in_flight: int) -> RunnerSpec:
    """The runner for `max_in_flight` tasks at a time: threads, the cluster at `dask_address`,
    or a local cluster of one worker process with as many threads."""
    if kind == "threads":
        return RunnerSpec("threads", {"max_workers": max_in_flight})
    if dask_address:
        return RunnerSpec("dask", {"address": dask_address})
    cluster = {
        "n_workers": 1,
        "threads_per_worker": max_in_flight,
        "processes": True,  # a process of its own: what crosses to it is what a cluster gets
        "dashboard_address": None,  # no web dashboard on a port per run
    }
    return RunnerSpec("dask", {"cluster_kwargs": cluster})


def fan_out_runner(max_in_flight: int) -> TaskRunner:
    """The task runner the settings select (read afresh), for `max_in_flight` tasks at a time."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from toolkit.config import Settings

    tunables = Settings()
    spec = runner_spec(tunables.task_runner, tunables.dask_address, max_in_flight)
    if spec.kind == "threads":
        return ThreadPoolTaskRunner(**spec.options)
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(**spec.options)
