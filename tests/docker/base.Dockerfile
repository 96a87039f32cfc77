# A stand-in for prefecthq/prefect where Docker Hub cannot be reached (tests/helpers/docker.py):
# Debian bookworm's Python in a venv, and a wheelhouse of the project's pinned dependencies that
# pip installs from, and only from. Built with the host's network and CA bundle; once per lock.
FROM resilient-flows-debian:bookworm
COPY ca-certificates.crt pyproject.toml requirements.lock README.md /tmp/project/
RUN python3 -m venv /opt/python \
    && PIP_CERT=/tmp/project/ca-certificates.crt /opt/python/bin/pip wheel --quiet \
        --no-cache-dir --wheel-dir /opt/wheels -c /tmp/project/requirements.lock \
        /tmp/project "setuptools>=68" \
    && rm -rf /opt/wheels/resilient_flows-* /tmp/project
ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/wheels PIP_DISABLE_PIP_VERSION_CHECK=1
