# Leadflow. Needs only Python 3.11+; everything else is installed into .venv on first use.
ifndef PYTHON
PYTHON := $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
endif
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test test-pure lint bench bench-quick migrate clean chaos up down

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,dev-broker]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install Leadflow with its dev tools

run: install ## everything on this machine: bundled broker, SQLite, the three services
	$(BIN)/leadflow dev

demo: install ## a day of traffic through a running `make run`; then open /dashboard on scoring
	$(BIN)/leadflow demo

# Most of the suite waits on brokers, databases and processes, not the CPU: two workers (each
# with its own broker and template database) halve the wall time on a 2-core machine.
TEST_WORKERS ?= 2

test: install ## the whole suite (real broker, real PostgreSQL and SQLite), TEST_WORKERS in parallel
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-pure: install ## the fast part: tests that need no broker, database or process
	$(BIN)/python -m pytest -m pure

lint: install ## ruff (check and format), mypy, import-linter
	$(BIN)/ruff check shared services tests bench
	$(BIN)/ruff format --check shared services tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

chaos: install ## fault drills in the production shape, full size (needs PostgreSQL); table in tests/chaos/results.md
	$(BIN)/python -m tests.chaos

bench: install ## every performance figure beside its baseline (about 10 min; BENCH_QUICK=1: under 4); writes bench/results/latest.json
	$(BIN)/python -m bench.run

bench-quick: install ## make bench with smaller sizes (under 4 minutes)
	BENCH_QUICK=1 $(BIN)/python -m bench.run

migrate: install
	$(BIN)/leadflow migrate

up: ## production shape in Docker: Kafka, PostgreSQL, init job, capture, 2x scoring, 2x routing
	docker compose up --build --detach --wait

down: ## stop the Compose stack (data volumes are kept; docker compose down -v drops them)
	docker compose down

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
