# The two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both bootstrap a virtualenv from the pinned lock file first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest system-deps lock clean

demo: $(STAMP)
	$(BIN)/emotitrack demo

test: $(STAMP) system-deps lint typecheck pytest

pytest: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -q -r training serving monitoring emotitrack --severity-level medium

typecheck: $(STAMP)
	$(BIN)/mypy

# Real servers the integration tests start themselves (PostgreSQL from Debian's packages).
system-deps:
	bash scripts/system-deps.sh

# uv installs the lock exactly (hashes checked, strays removed); pip's hash mode cannot take
# a package pinned with an extra (pandas[parquet]) that others also require without it.
# --compile-bytecode: uv does not compile by default, and where PYTHONDONTWRITEBYTECODE is set
# (these machines set it) every process would compile mlflow & co. from source: ~7 s per start.
# Our own packages (installed editable) are compiled in place for the same reason.
UV_VERSION := 0.13.9
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python --require-hashes requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q training serving monitoring emotitrack >/dev/null
	touch $@

# Re-pin after changing dependencies in pyproject.toml: the full lock (dev tools included),
# the runtime lock the container image installs, and requirements.txt (the runtime pins without
# hashes, for installers that check none: Heroku's Python buildpack, conda.yaml's pip).
lock:
	test -x $(BIN)/uv || ($(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet uv==$(UV_VERSION))
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes --no-strip-extras \
		--custom-compile-command "make lock" -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --generate-hashes --no-strip-extras \
		--custom-compile-command "make lock" -o requirements-runtime.lock
	$(BIN)/python scripts/requirements_txt.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache test-artifacts
