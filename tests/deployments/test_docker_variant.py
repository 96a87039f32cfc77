"""The Docker variants in prefect.yaml: one twin per process deployment, built from the repo's
Dockerfile into an image named by Prefect variables, run from where the image holds the code.

These hold the pieces `prefect deploy` and the docker worker rely on, without an engine;
tests/docker (`make test-docker`) builds, pushes and runs the image for real."""

from __future__ import annotations

import tomllib

import pytest
import yaml

from deployments.deploy import DOCKER_VARIABLES, ensure_docker_variables, select
from tests.helpers import ROOT

DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
BUILD = "prefect_docker.deployments.steps.build_docker_image"
PUSH = "prefect_docker.deployments.steps.push_docker_image"


def docker_variants() -> list[dict]:
    return select(ROOT / "prefect.yaml", [], docker=True)


def test_every_process_deployment_has_a_docker_twin_that_differs_only_in_how_it_runs() -> None:
    process = {d["name"]: d for d in select(ROOT / "prefect.yaml", [], docker=False)}
    docker = {d["name"].removesuffix("-docker"): d for d in docker_variants()}
    how_it_runs = {"name", "work_pool", "build", "push", "pull"}

    assert docker.keys() == process.keys()
    for name, twin in docker.items():
        same = {k: v for k, v in twin.items() if k not in how_it_runs}
        assert same == {k: v for k, v in process[name].items() if k not in how_it_runs}, name


def test_the_image_is_named_by_variables_and_pushed_as_built() -> None:
    for deployment in docker_variants():
        (build,) = deployment["build"]
        (push,) = deployment["push"]
        image_name = build[BUILD]["image_name"]
        for variable in ("docker_registry", "docker_image"):
            assert "{{ prefect.variables." + variable + " }}" in image_name
        base = build[BUILD]["buildargs"]["BASE_IMAGE"]
        assert base == "{{ prefect.variables.docker_base_image }}"
        assert build[BUILD]["pull"] is False  # a local base is not looked up in a registry
        assert build[BUILD]["dockerfile"] == "Dockerfile"
        assert push[PUSH]["image_name"] == "{{ build-image.image_name }}"
        assert deployment["work_pool"]["job_variables"]["image"] == "{{ build-image.image }}"


def test_the_image_holds_every_package_where_the_pull_step_looks() -> None:
    workdir = next(
        line.split()[1] for line in DOCKERFILE.splitlines() if line.startswith("WORKDIR")
    )
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    for deployment in docker_variants():
        (pull,) = deployment["pull"]
        assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == workdir
    for package in packages:
        assert f"COPY {package.rstrip('*')} " in DOCKERFILE, package
    # By default on Prefect's image of the version pyproject pins, as docker_base_image is.
    assert "ARG BASE_IMAGE=prefecthq/prefect:3.9.1-" in DOCKERFILE
    assert DOCKER_VARIABLES["docker_base_image"].startswith("prefecthq/prefect:3.9.1-")
    assert "FROM ${BASE_IMAGE}" in DOCKERFILE
    assert "-c requirements.lock ." in DOCKERFILE  # the project, with the lock's pins


def test_deploy_selects_the_process_deployments_or_the_docker_variants() -> None:
    path = ROOT / "prefect.yaml"

    process = select(path, [], docker=False)
    docker = select(path, [], docker=True)

    assert {d["name"] for d in docker} == {
        d["name"] for d in DEPLOYMENTS if d["work_pool"]["name"] == "docker"
    }
    assert not {d["name"] for d in process} & {d["name"] for d in docker}
    assert len(process) + len(docker) == len(DEPLOYMENTS)
    with pytest.raises(SystemExit, match="no deployment named nope"):
        select(path, ["nope"], docker=False)


def test_the_image_variables_are_created_once_and_never_overwritten(prefect_server: str) -> None:
    from prefect.variables import Variable

    Variable.unset("docker_image")
    Variable.set("docker_registry", "registry.example.com/team", overwrite=True)

    ensure_docker_variables()
    ensure_docker_variables()

    assert Variable.get("docker_registry") == "registry.example.com/team"
    assert Variable.get("docker_image") == DOCKER_VARIABLES["docker_image"]
