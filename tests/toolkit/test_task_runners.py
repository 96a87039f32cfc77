"""Which task runner the settings select (pure), and that the settings reach it; the flow on
a real Dask cluster is tests/flows/test_fan_out.py and tests/scale/test_fan_out.py."""

from __future__ import annotations

import pytest

from toolkit.task_runners import RunnerSpec, fan_out_runner, runner_spec


def test_threads_are_bounded_by_max_in_flight() -> None:
    assert runner_spec("threads", "tcp://ignored:8786", 4) == RunnerSpec(
        "threads", {"max_workers": 4}
    )


def test_dask_connects_to_the_scheduler_it_is_given() -> None:
    assert runner_spec("dask", "tcp://dask:8786", 4) == RunnerSpec(
        "dask", {"address": "tcp://dask:8786"}
    )


def test_dask_without_an_address_starts_one_worker_process_with_a_thread_per_slot() -> None:
    spec = runner_spec("dask", None, 6)
    cluster = spec.options["cluster_kwargs"]
    assert (spec.kind, cluster["n_workers"], cluster["threads_per_worker"]) == ("dask", 1, 6)
    assert cluster["processes"] is True


def test_the_setting_selects_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(fan_out_runner(3), ThreadPoolTaskRunner)
    monkeypatch.setenv("RESILIENT_FLOWS_TASK_RUNNER", "dask")
    monkeypatch.setenv("RESILIENT_FLOWS_DASK_ADDRESS", "tcp://dask:8786")
    runner = fan_out_runner(3)
    assert isinstance(runner, DaskTaskRunner) and runner.address == "tcp://dask:8786"
    monkeypatch.setenv("RESILIENT_FLOWS_TASK_RUNNER", "processes")
    with pytest.raises(ValueError, match="task_runner"):
        fan_out_runner(3)
