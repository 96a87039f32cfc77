# The README's two commands: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: venv demo test lint format lock clean bench up

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

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m deployments check
	$(BIN)/python -m pytest $(ARGS)

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

# ledger_sync against a bare asyncio + httpx script, side by side in one run (prints the ratio).
bench: venv
	$(BIN)/python -m benchmarks.ledger_sync_vs_httpx --records 100000
