# Two commands: `make run` and `make test`. Everything else is set up on demand. CI runs `make lint` then `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Hashed locks made by uv (`make lock`); one file per install profile, each complete:
#   requirements.lock          runtime only (the production image)
#   requirements-sandbox.lock  runtime + the [sandbox] extra
#   requirements-dev.lock      runtime + sandbox + dev tools (what `make run` and `make test` install)
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet --custom-compile-command "make lock"

.PHONY: install run test lint lock bench clean browser

$(STAMP): requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r requirements-dev.lock
	# The project itself is not in the lock (it has no hash): installed editable, without resolving anything.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/idsync run

test: install browser
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -q

# The HTML reports are checked in a real headless browser (Debian's chromium); installed when missing (as root, as
# on CI machines), otherwise the line says how.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && \
				DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
		else echo "chromium is missing: sudo apt-get install -y chromium (the HTML report tests need it)"; fi; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Re-pin after changing dependencies in pyproject.toml; existing pins are kept unless `UPGRADE=--upgrade`.
lock: install
	test -x $(BIN)/uv || $(BIN)/pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) $(UPGRADE) -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra sandbox $(LOCK_FLAGS) $(UPGRADE) -c requirements.lock \
		-o requirements-sandbox.lock
	$(BIN)/uv pip compile pyproject.toml --extra sandbox --extra dev $(LOCK_FLAGS) $(UPGRADE) \
		-c requirements-sandbox.lock -o requirements-dev.lock

bench: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/sandbox_scale.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/revocation_latency.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/joiners.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/offboarding.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/reconcile.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/guard_decisions.py

clean:
	rm -rf $(VENV) var .pytest_cache
