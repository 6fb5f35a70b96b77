# mmp: `make demo` sets everything up and runs the pipeline; `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Stage commands in dvc.yaml call `python`: make it the venv's.
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: help install browser compose-cli postgres demo test test-fast lint format params bench clean

help:
	@echo "make demo      create .venv, install mmp, run the pipeline on the bundled titanic data"
	@echo "make test      install and run the whole test suite (slow tests included)"
	@echo "make test-fast the quick unit tests only"
	@echo "make lint      ruff check + format check + import layers (import-linter)"
	@echo "make params    recompose params.yaml from conf/"
	@echo "make bench     run the benchmarks in bench/"

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium and its driver for tests/test_browser.py (Debian packages; CI runs as root on a fresh machine).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "chromium/chromedriver are missing and cannot be installed here (needs root and apt-get):"; \
		echo "the browser tests will be skipped. Install the Debian packages chromium and chromium-driver."; \
	fi

# docker-compose v1 (a small Debian package, no Docker engine) validates docker-compose.yml offline for
# tests/test_docker_compose.py; without it that one check is skipped.
compose-cli:
	@if command -v docker-compose >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends docker-compose 2>/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose; }; \
	else \
		echo "docker-compose is missing and cannot be installed here (needs root and apt-get):"; \
		echo "the docker-compose.yml validation will be skipped. Install the Debian package docker-compose."; \
	fi

# PostgreSQL 15 (Debian package) for the tests that start a real server (tests/servers.py): SQL sources, the
# team MLflow store, Optuna's shared storage. Without it those tests are skipped.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends postgresql 2>/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql; }; \
	else \
		echo "PostgreSQL is missing and cannot be installed here (needs root and apt-get):"; \
		echo "the tests that need a PostgreSQL server will be skipped. Install the Debian package postgresql."; \
	fi

demo: install
	@test -f configs/dev.yaml || $(BIN)/mmp get-config --env-name dev
	$(BIN)/dvc repro
	@echo
	@$(BIN)/mmp runs --limit 4
	@echo
	@run_id=$$($(BIN)/mmp runs --stage train --limit 1 --quiet); \
	echo "MLflow run id: $$run_id"; \
	echo "Next:"; \
	echo "  source $(VENV)/bin/activate"; \
	echo "  mlflow ui --port 5000                    # the runs, params, metrics and model at http://127.0.0.1:5000"; \
	echo "  dvc exp run -S recipe=lgbm-tuned         # another recipe as a DVC experiment"; \
	echo "  dvc exp show                             # compare experiments"; \
	echo "  mmp train -c configs/dev.yaml -r recipes/xgb-baseline.yaml -d data/train.csv"

# Test files are spread over TEST_WORKERS processes (pytest-xdist); a file's tests stay in one process, in
# order, so module fixtures (a trained project, an MLflow server) are built once. 2 workers on 2 cores:
# 10.5 min instead of 15.7 min.
TEST_WORKERS ?= 2

test: install browser compose-cli postgres
	$(BIN)/python -m pytest -ra --durations=15 -n $(TEST_WORKERS) --dist loadfile

test-fast: install
	$(BIN)/python -m pytest -ra -m "not slow" -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check src stages tests bench
	$(BIN)/ruff format --check src stages tests bench
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format src stages tests bench
	$(BIN)/ruff check --fix src stages tests bench

params: install
	$(BIN)/mmp compose -o params.yaml

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf data/prepared models .pytest_cache .ruff_cache
