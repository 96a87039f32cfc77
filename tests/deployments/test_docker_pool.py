"""deployments/docker_pool.py: the docker pool's defaults let a container reach what the
deployer's processes reach, and share their local state; nothing local on the scale profile."""

from __future__ import annotations

from pathlib import Path

from deployments.docker_pool import container_job_variables, outermost, with_defaults


def test_local_state_is_mounted_at_the_same_path_and_named_in_the_environment() -> None:
    variables = container_job_variables(
        {"RESILIENT_FLOWS_REDIS_URL": "redis://127.0.0.1:6379/4", "HOME": "/root"},
        Path("/srv/flows/storage"),
        "sqlite:////srv/flows/index/ledger.sqlite",
    )

    assert variables["network_mode"] == "host"
    assert variables["volumes"] == [
        "/srv/flows/index:/srv/flows/index",
        "/srv/flows/storage:/srv/flows/storage",
    ]
    assert variables["env"] == {
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": "/srv/flows/storage",
        "RESILIENT_FLOWS_LEDGER_INDEX_URL": "sqlite:////srv/flows/index/ledger.sqlite",
        "RESILIENT_FLOWS_REDIS_URL": "redis://127.0.0.1:6379/4",
    }  # the project's settings only: HOME is the container's own


def test_one_mount_when_the_index_lives_inside_the_storage_directory_s_parent() -> None:
    variables = container_job_variables(
        {}, Path("/home/me/.prefect-home/storage"), "sqlite:////home/me/.prefect-home/index.sqlite"
    )

    assert variables["volumes"] == ["/home/me/.prefect-home:/home/me/.prefect-home"]


def test_nothing_is_mounted_when_results_and_the_index_are_remote() -> None:
    variables = container_job_variables(
        {"RESILIENT_FLOWS_DOCKER_NETWORK": "flows-net"},
        None,
        "postgresql+psycopg://postgres@db:5432/ledger",
    )

    assert variables["volumes"] == []
    assert variables["network_mode"] == "flows-net"
    assert "RESILIENT_FLOWS_DOCKER_NETWORK" not in variables["env"]  # the worker's, not the run's
    assert "PREFECT_RESULTS_LOCAL_STORAGE_PATH" not in variables["env"]


def test_outermost_keeps_only_directories_no_other_contains() -> None:
    paths = [Path("/a/b"), Path("/a"), Path("/c"), Path("/a/b/c"), Path("/ab")]

    assert outermost(paths) == [Path("/a"), Path("/ab"), Path("/c")]


def test_defaults_land_in_prefect_docker_s_own_template_without_changing_it() -> None:
    from prefect_docker.worker import DockerWorker

    original = DockerWorker.get_default_base_job_template()
    template = with_defaults(original, {"network_mode": "host", "volumes": ["/x:/x"]})

    properties = template["variables"]["properties"]
    assert properties["network_mode"]["default"] == "host"
    assert properties["volumes"]["default"] == ["/x:/x"]
    assert original["variables"]["properties"]["network_mode"].get("default") is None
    assert template["job_configuration"] == original["job_configuration"]
