# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: demo test lint unit pythons bench server-packages clean sam-validate sam-build sam-check local-start local-stop

# A virtualenv with the package (editable), its PostgreSQL driver and the dev tools.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Tests and the demo start their own throwaway servers from the installed server binaries.
server-packages:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	else echo "Installing the PostgreSQL server binaries (apt-get)..."; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; fi
	@if [ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null 2>&1; then :; \
	else echo "Installing the MariaDB server binaries (apt-get)..."; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null; fi

demo: server-packages $(BIN)/.installed
	$(BIN)/rotators demo

# What the sample events in events/ need, left running in the background (README: "Run a rotator
# locally"); MARIADB=1 adds a MariaDB for events/mysql/.
local-start: server-packages $(BIN)/.installed
	$(BIN)/rotators local start $(if $(MARIADB),--mariadb)

local-stop: $(BIN)/.installed
	$(BIN)/rotators local stop

lint: $(BIN)/.installed
	$(BIN)/ruff check rotators tests bench sam
	$(BIN)/ruff format --check rotators tests bench sam
	$(BIN)/mypy
	$(BIN)/mypy --strict tests

unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit

# One worker per core (at most 4): each starts its own servers; the time goes to waiting on them.
test: server-packages lint sam-check pythons
	$(BIN)/pytest -n auto --maxprocesses=4

# The other Pythons Lambda runs: on each, the unit tests and a rotation per engine and strategy
# (the conformance suite), in its own virtualenv. A version that is not installed (as pythonX.Y
# or under pyenv) is skipped, and said so.
OTHER_PYTHONS ?= 3.12 3.13
PYENV_VERSIONS := $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions
pythons: server-packages
	@for version in $(OTHER_PYTHONS); do \
	  python=$$(ls -d $(PYENV_VERSIONS)/$$version.*/bin/python 2>/dev/null | sort -V | tail -n 1); \
	  if [ -z "$$python" ] && python$$version -c '' 2>/dev/null; then python=$$(command -v python$$version); fi; \
	  if [ -z "$$python" ]; then echo "SKIPPED: Python $$version is not installed (no python$$version, none in $(PYENV_VERSIONS))"; continue; fi; \
	  $(MAKE) --no-print-directory .venv-$$version/bin/.installed PYTHON_FOR_VENV=$$python || exit 1; \
	  echo "Python $$version ($$python): unit tests and the conformance suite"; \
	  .venv-$$version/bin/pytest -q -n auto --maxprocesses=4 -p no:cacheprovider tests/unit tests/integration/test_conformance.py || exit 1; \
	done

.venv-%/bin/.installed: pyproject.toml
	$(PYTHON_FOR_VENV) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-$*/bin/python -m pip install --quiet -e '.[suite]'
	touch $@

# The README's performance tables: rotations against local servers, then the built bundles, then
# their cold starts under Lambda's runtime client (with and without bytecode) and the cost per rotation,
# then the INIT of every bundle `sam build` made (also of the engines no server here can rotate).
bench: server-packages $(BIN)/.installed sam-build
	$(BIN)/python bench/rotation.py
	$(BIN)/python bench/bundles.py
	$(BIN)/python bench/coldstart.py
	$(BIN)/python bench/coldstart.py --build-dir .aws-sam/build

# Python 3.12 vs 3.13 for the template's runtime: cold INIT and rotations of each bundle under
# Lambda's runtime client (awslambdaric) and a local Runtime API (bench/lambda_runtime.py).
.PHONY: runtimes
runtimes: server-packages $(BIN)/.installed
	$(BIN)/python bench/runtimes.py

# -- SAM: validate + lint + policy scan, `sam build` without Docker, then check every bundle ------
# The SAM tools live in their own venv: aws-sam-cli pins its own boto3, which would clash with .venv.
SAM_VENV ?= .venv-sam
SAM_BIN  := $(SAM_VENV)/bin
SAM_ENV  := SAM_CLI_TELEMETRY=0 PATH="$(CURDIR)/$(SAM_BIN):$$PATH"

$(SAM_BIN)/.installed: sam/requirements.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_BIN)/python -m pip install --quiet --upgrade pip
	$(SAM_BIN)/python -m pip install --quiet -r sam/requirements.txt
	touch $@

# cfn-lint and checkov read both template.yaml and its SAM transform (the generated resources).
sam-validate: $(SAM_BIN)/.installed
	$(SAM_ENV) sam validate --lint
	$(SAM_BIN)/cfn-lint template.yaml
	mkdir -p .aws-sam && $(SAM_BIN)/python sam/transform.py template.yaml > .aws-sam/transformed.json
	$(SAM_BIN)/cfn-lint .aws-sam/transformed.json
	$(SAM_BIN)/checkov --quiet --compact --skip-download --framework cloudformation \
	  -f template.yaml -f .aws-sam/transformed.json

# Cached twice: SAM skips functions whose rotators/ and sam/Makefile did not change (its cache is
# dropped when pyproject.toml or the bundler change), and sam/bundle.py keeps installed wheels for
# the day.
sam-build: $(SAM_BIN)/.installed
	@if [ -f .aws-sam/build.toml ] && [ -n "$$(find pyproject.toml sam/bundle.py -newer .aws-sam/build.toml)" ]; \
	  then rm -rf .aws-sam/cache; fi
	$(SAM_ENV) sam build

# bundles.py checks what each bundle holds; coldstart.py --check then has the PostgreSQL and MySQL
# bundles rotate real users, both strategies, in one awslambdaric process per engine, and every
# bundle answers a malformed event there with EventError (SKIPPED without the runtime's Python).
sam-check: server-packages sam-validate sam-build $(BIN)/.installed
	$(BIN)/python bench/bundles.py
	$(BIN)/python bench/coldstart.py --check --build-dir .aws-sam/build

clean:
	rm -rf $(VENV) $(SAM_VENV) .venv-3.* .aws-sam .mypy_cache .ruff_cache .pytest_cache
