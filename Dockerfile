# The image of the Docker variants in prefect.yaml (`python -m deployments deploy --docker`):
# Prefect's own image, the project's pinned dependencies, and the project, in the directory the
# variants' pull step sets. Flows are imported as modules (`flows.ledger_sync:ledger_sync`),
# so the project is installed as a package, not only copied.
FROM prefecthq/prefect:3.9.1-python3.11

WORKDIR /opt/resilient-flows
COPY pyproject.toml requirements.lock README.md ./
COPY blocks blocks
COPY deployments deployments
COPY flows flows
COPY sandbox sandbox
COPY toolkit toolkit
RUN pip install --no-cache-dir -c requirements.lock .
