# Columba: `make dev` runs the embedded service, `make test` runs the suite. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PG_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/postgres
PG_REDIS_URL ?= redis://127.0.0.1:6379/15
UV_VERSION := 0.13.9
# `make lock` keeps the pins it can; `make lock LOCK_UPGRADE=--upgrade` moves all to the latest.
LOCK_ARGS := --generate-hashes --python-version 3.11 --python-platform linux --quiet \
	--custom-compile-command 'make lock' $(LOCK_UPGRADE)

.PHONY: dev test test-pg lint format bench bench-tracking bench-search openapi lock venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/columba dev

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-pg: $(STAMP)
	COLUMBA_TEST_DATABASE_URL=$(PG_URL) COLUMBA_TEST_REDIS_URL=$(PG_REDIS_URL) \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

openapi: $(STAMP)
	$(BIN)/columba openapi > openapi/openapi.json

# The Docker image's pinned dependencies: requirements.lock (pyproject's runtime dependencies)
# and requirements-build.lock (setuptools, which builds the sdists among them and the project).
lock: $(STAMP)
	$(BIN)/python -m pip install -q 'uv==$(UV_VERSION)'
	$(BIN)/uv pip compile pyproject.toml $(LOCK_ARGS) -o requirements.lock
	echo 'setuptools>=70.1' | $(BIN)/uv pip compile - $(LOCK_ARGS) -o requirements-build.lock

bench: $(STAMP)
	sh bench/setup.sh $(BIN)/python
	$(BIN)/python -m bench.hotpath $(BENCH_ARGS)
	$(BIN)/python -m bench.tracking $(TRACKING_BENCH_ARGS)

bench-tracking: $(STAMP)
	sh bench/setup.sh $(BIN)/python
	$(BIN)/python -m bench.tracking $(TRACKING_BENCH_ARGS)

bench-search: $(STAMP)
	$(BIN)/python -m bench.search $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
