# Two commands: `make run` and `make test`. Everything else is set up on demand.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock -r requirements-dev.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/idsync run

test: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .

bench: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/sandbox_scale.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/revocation_latency.py

clean:
	rm -rf $(VENV) var .pytest_cache
