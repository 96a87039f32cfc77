# The README's two commands: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: venv browser services docker-packages demo test test-scale test-docker lint format lock clean bench bench-scale up up-scale scale-extra

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/python -m deployments.demo $(ARGS)

# The local stack: server, sandbox, blocks, work pool, every deployment, a worker; Ctrl-C stops it.
up: venv
	$(BIN)/python -m deployments up $(ARGS)

# The scale profile's stack (deployments/profiles.toml): PostgreSQL and Redis of the machine
# (127.0.0.1:5432, :6379), two API replicas, background services, a local S3-compatible
# object store, three workers; Ctrl-C stops it.
up-scale: scale-extra
	$(BIN)/python -m deployments up --profile scale $(ARGS)

# The scale profile's Python packages, and Debian's haproxy (its load balancer in front of
# the API replicas, deployments/balancer.py), installed with apt only when missing.
scale-extra: venv
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev,scale]'
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || { \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq haproxy; }

# Debian's Docker engine, registry and debootstrap for tests/docker, when there is no engine
# to use (DOCKER_HOST, /var/run/docker.sock) and they are missing (tests/helpers/docker.py).
docker-packages:
	@{ [ -n "$$DOCKER_HOST" ] || [ -S /var/run/docker.sock ] || \
		{ command -v dockerd && command -v docker-registry && command -v debootstrap; }; } \
		>/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq docker.io docker-registry debootstrap; }

# Debian's chromium for the browser test (tests/e2e/test_browser.py), driven by Playwright
# from .venv; installed only when missing, never downloaded by Playwright.
browser:
	@test -x /usr/bin/chromium || { \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# Debian's redis-server and PostgreSQL server programs, from which the tests start a Redis and
# a PostgreSQL of their own when none answers on 127.0.0.1:6379 / 127.0.0.1:5432
# (tests/helpers/services.py); installed with apt only when missing.
services:
	@{ command -v redis-server && { ls /usr/lib/postgresql/*/bin/initdb || command -v initdb; }; } \
		>/dev/null 2>&1 || { \
		command -v apt-get >/dev/null || { echo "no apt-get: install redis-server and" \
			"PostgreSQL's server programs (initdb on PATH) yourself"; exit 0; }; \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq redis-server postgresql; }

test: venv browser services
	$(BIN)/ruff check .
	$(BIN)/python -m deployments check
	$(BIN)/python -m pytest --ignore=tests/scale --ignore=tests/docker $(ARGS)

# The flows on the scale profile's stack (tests/scale): 60 runs over 3 workers, lost workers
# and replicas; against the machine's PostgreSQL and Redis (or the suite's own, as make test).
test-scale: scale-extra services
	$(BIN)/python -m pytest tests/scale $(ARGS)

# The Docker variants for real (tests/docker): the image built, pushed to a registry, every
# variant run in a container by a Docker worker, on the local profile and on the scale
# profile's stack; an engine, a registry and a base image are started or made when the
# machine has none (tests/helpers/docker.py).
test-docker: scale-extra services docker-packages
	$(BIN)/python -m pytest tests/docker $(ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-pin every dependency after changing pyproject.toml.
lock: venv
	$(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check > requirements.lock

clean:
	rm -rf $(VENV) .prefect-home

# Every program as a whole process, as a user runs it, side by side in one run against its
# baseline (python -m benchmarks: ledger_sync, the breaker, the queue); to benchmarks/RESULTS.md.
# A smoke run: `make bench BENCH_ARGS="--quick --repeat 1 --markdown /tmp/b.md"`.
BENCH_ARGS ?= --markdown benchmarks/RESULTS.md
bench: venv
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[bench]'
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Ledger syncs per minute on the scale profile's stack, with 1 and 3 workers
# (benchmarks/scale_throughput.py); its table to benchmarks/SCALE.md.
bench-scale: scale-extra
	$(BIN)/python -m benchmarks.scale_throughput --markdown benchmarks/SCALE.md $(ARGS)
