"""What the Docker tests do on any server: deploy the variants, run a Docker worker, start
runs, and kill a sync's container mid-load to see it resumed exact."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

from flows.rerun_crashed import RERUN_MESSAGE
from tests.helpers import ROOT
from tests.helpers.ledger import assert_ledger_exact, page_fetches
from tests.helpers.polling import poll_until

PREFECT = str(Path(sys.executable).with_name("prefect"))
FLOW_RUN_LABEL = "io.prefect.flow-run-id"
KILL_BATCHES = 10  # 1000 records in batches of 100, each POST held back 0.5 s


def deploy_docker(env: Mapping[str, str], workdir: Path, *names: str) -> str:
    """`python -m deployments deploy --docker [NAME ...]` with `env`, as a user runs it; its
    output (kept in workdir/deploy.log). It must pass."""
    deployed = subprocess.run(
        [sys.executable, "-m", "deployments", "deploy", "--docker", *names],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=900,
    )
    (workdir / "deploy.log").write_text(deployed.stdout + deployed.stderr)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    return deployed.stdout


def start_docker_worker(env: Mapping[str, str], workdir: Path) -> subprocess.Popen[bytes]:
    """`prefect worker start --pool docker --type docker`, its log in workdir/worker.log."""
    return subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "docker", "--type", "docker"],
        env={**env, "PREFECT_WORKER_QUERY_SECONDS": "1"},
        cwd=workdir,
        stdout=(workdir / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def pool_defaults() -> dict[str, Any]:
    """The `docker` pool's job-variable defaults, as `deploy --docker` set them."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        properties = prefect.read_work_pool("docker").base_job_template["variables"]
    return {name: spec.get("default") for name, spec in properties["properties"].items()}


def start_run(name: str, job_variables: dict[str, Any] | None = None, **parameters: Any) -> UUID:
    """A run of the deployment `name`, with `parameters` over its defaults (and
    `job_variables` over the deployment's)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        (deployment,) = [d for d in prefect.read_deployments() if d.name == name]
        return prefect.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, job_variables=job_variables
        ).id


def containers_of(engine: Any, run_id: UUID, include_stopped: bool = True) -> list[Any]:
    """The containers the Docker worker started for flow run `run_id`."""
    label = {"label": f"{FLOW_RUN_LABEL}={run_id}"}
    return engine.containers.list(all=include_stopped, filters=label)


def remove_run_containers(engine: Any) -> None:
    for container in engine.containers.list(all=True, filters={"label": FLOW_RUN_LABEL}):
        container.remove(force=True)


def settled(run_id: UUID) -> Any:
    """The run once final and not Crashed (a crashed run may yet be run again), else None."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(run_id)
    return run if run.state.is_final() and not run.state.is_crashed() else None


def state_history(run_id: UUID) -> list[tuple[str, str]]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        states = sorted(prefect.read_flow_run_states(run_id), key=lambda s: s.timestamp)
    return [(state.name, state.message or "") for state in states]


def kill_a_sync_and_see_it_resume_exact(
    engine: Any, prefix: str, job_variables: dict[str, Any] | None = None
) -> list[Any]:
    """A `ledger-sync-docker` run (with `job_variables`) into a sandbox of its own, its
    container SIGKILLed mid-load; asserts that the worker saw it crash, rerun-crashed
    ran it again, and a new container finished it exact from the checkpoints the killed one
    left: no page fetched again, no new snapshot, only the batches not yet applied (and the
    one in flight). The run's containers."""
    from deployments.stack import start_sandbox_fleet, sync_parameters

    (sandbox,) = start_sandbox_fleet(1, records=1000, prefix=prefix)
    try:
        sandbox.set_faults("ledger", slow_rate=1.0, slow_seconds=0.5)
        run_id = start_run(
            "ledger-sync-docker",
            job_variables,
            **sync_parameters(
                prefix, 0, approval_above_eur=None, approval_above_quarantine_rate=None
            ),
        )
        poll_until(lambda: sandbox.counters()["ledger"]["applied"] >= 2, 300, 0.2, "loading")
        (container,) = containers_of(engine, run_id, include_stopped=False)
        container.kill()  # SIGKILL: the flow run's process and its container end at once
        applied_at_kill = sandbox.counters()["ledger"]["applied"]
        assert applied_at_kill < KILL_BATCHES
        sandbox.set_faults("ledger")
        sandbox.reset_counters()

        # Crashed is final, but rerun-crashed takes the run on from there.
        run = poll_until(lambda: settled(run_id), 420, 1, "a run settled past its crash")

        history = state_history(run_id)
        assert run.state.name == "Completed", history
        assert_ledger_exact(sandbox)  # every record once, nothing applied twice
        assert "Crashed" in [name for name, _ in history], history  # the worker saw it die
        assert ("AwaitingRetry", RERUN_MESSAGE) in history, history  # and it was run again
        assert run.run_count >= 2
        assert page_fetches(sandbox) == {}
        assert sandbox.counters()["ledger"]["applied"] <= KILL_BATCHES - applied_at_kill + 1
        containers = containers_of(engine, run_id)
        assert len(containers) >= 2  # the killed one and the one that finished
        return containers
    finally:
        sandbox.stop()
