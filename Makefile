# The commands people type.  `make run` and `make test` are all the set-up a new machine needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-sqlite test-postgres lint typecheck fmt openapi migrate seed clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/quyu migrate
	$(BIN)/quyu seed-demo --if-empty
	$(BIN)/quyu serve --host 127.0.0.1 --port 8000

test: $(STAMP) lint typecheck test-sqlite test-postgres

# pytest-xdist workers, each with a database of its own; tests are shared out one by one,
# except those marked xdist_group, kept on one worker (a module's server starts once).
# `make test-sqlite PYTEST_WORKERS=0` runs in-process.
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadgroup

test-sqlite: $(STAMP)
	QUYU_TEST_DB=sqlite $(PYTEST)

test-postgres: $(STAMP)
	QUYU_TEST_DB=postgres $(PYTEST)

lint: $(STAMP)
	$(BIN)/ruff check app tests alembic
	$(BIN)/ruff format --check app tests alembic

typecheck: $(STAMP)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format app tests alembic
	$(BIN)/ruff check --fix app tests alembic

openapi: $(STAMP)
	$(BIN)/quyu export-openapi

migrate: $(STAMP)
	$(BIN)/quyu migrate

seed: $(STAMP)
	$(BIN)/quyu seed-demo

clean:
	rm -rf $(VENV) quyu.db quyu.db-wal quyu.db-shm .mypy_cache .ruff_cache .pytest_cache
