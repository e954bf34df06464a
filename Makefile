# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME := $(CURDIR)/dagster_home
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: install demo test lint ui clean-data bench deploy-up deploy-down

install: $(VENV)/.installed

# torch==2.13.0 first: the local CPU build (another spec would pull a multi-GB CUDA build).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: install
	$(VENV)/bin/specforge-assets demo

# Three test processes, one test file each at a time (pytest-xdist, --dist loadfile: a module's
# fixtures stay in one process). The suite mostly waits on the processes it starts (Dagster
# daemons, webservers, browsers, torchrun): on 2 cores, 3 workers took 28 min where one took 40.
PYTEST_WORKERS ?= 3
test: install lint
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# ruff (lint rules and type-checking debt list in pyproject.toml) and mypy on the package.
lint: install
	$(VENV)/bin/ruff check specforge_assets tests bench
	$(VENV)/bin/ruff format --check specforge_assets tests bench
	$(VENV)/bin/mypy

ui: install
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean-data:
	rm -rf data

# The team deployment on this machine (README "Running as a team"): a throwaway PostgreSQL
# cluster, then a gRPC code server, the daemon and the webserver (scripts/deploy.sh). State, logs
# and the connection variables (`source $(DEPLOY_STATE)/env`) live in DEPLOY_STATE.
DEPLOY_STATE ?= /tmp/specforge-deploy-$(shell id -un)
DEPLOY_PORT ?= 3000

deploy-up: install
	@$(PY) -c "import dagster_postgres" 2>/dev/null || $(PY) -m pip install -q -e '.[deploy]'
	PYTHON=$(abspath $(PY)) WEB_PORT=$(DEPLOY_PORT) scripts/deploy.sh up $(DEPLOY_STATE)

deploy-down:
	PYTHON=$(abspath $(PY)) scripts/deploy.sh down $(DEPLOY_STATE)
