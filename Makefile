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

# Line and branch coverage of our packages, the servers and CLIs the tests start included
# ([tool.coverage.*] in pyproject.toml); below its fail_under the run fails.
pytest: $(STAMP)
	$(BIN)/python -m pytest --cov --cov-report=term-missing:skip-covered --cov-report=html

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -q -r training serving monitoring batch emotitrack --severity-level medium
	$(BIN)/lint-imports

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
	$(BIN)/python -m compileall -q training serving monitoring batch emotitrack >/dev/null
	touch $@

# Re-pin after changing dependencies in pyproject.toml. The full lock (every part and the dev
# tools: what the tests run on) is resolved first; the profile locks are constrained to it, so
# every image runs the versions the tests ran:
#   requirements-runtime.lock  serving + training + monitoring (the jobs image, mlflow server)
#   requirements-serving.lock  the API image
# then requirements.txt / requirements-runtime.txt: the same pins without hashes, for installers
# that check none (Heroku's Python buildpack: the API; conda.yaml's pip: MLproject's jobs).
COMPILE = $(BIN)/uv pip compile --quiet pyproject.toml --python-version 3.11 --generate-hashes \
	--no-strip-extras --custom-compile-command "make lock"
lock:
	test -x $(BIN)/uv || ($(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet uv==$(UV_VERSION))
	$(COMPILE) --extra dev -o requirements.lock
	$(COMPILE) --extra serving --extra training --extra monitoring --extra batch -c requirements.lock \
		-o requirements-runtime.lock
	$(COMPILE) --extra serving -c requirements.lock -o requirements-serving.lock
	$(BIN)/python scripts/requirements_txt.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache test-artifacts
