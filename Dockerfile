# The image of the Docker variants in prefect.yaml (`python -m deployments deploy --docker`):
# a Python image, the project's pinned dependencies, and the project, in the directory the
# variants' pull step sets. Flows are imported as modules (`flows.ledger_sync:ledger_sync`),
# so the project is installed as a package, not only copied.
#
# BASE_IMAGE is any image with Python 3.11+ and pip on PATH: Prefect's own by default. Where
# Docker Hub cannot be reached, pass a local one (the Prefect variable `docker_base_image`,
# which `deploy --docker` hands to the build); pip then installs from wherever that image's
# pip configuration points (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX), as a company's base
# image points at its own package mirror. `make test-docker` builds one from Debian's
# debootstrap with a wheelhouse inside (tests/helpers/docker.py).
ARG BASE_IMAGE=prefecthq/prefect:3.9.1-python3.11
FROM ${BASE_IMAGE}

WORKDIR /opt/resilient-flows
# The dependencies first, in a layer of their own: a change to the code reuses it.
COPY pyproject.toml requirements.lock README.md ./
RUN mkdir -p blocks deployments flows sandbox toolkit \
    && pip install --no-cache-dir -c requirements.lock . \
    && pip uninstall --yes resilient-flows
COPY blocks blocks
COPY deployments deployments
COPY flows flows
COPY sandbox sandbox
COPY toolkit toolkit
RUN pip install --no-cache-dir --no-deps -c requirements.lock .
