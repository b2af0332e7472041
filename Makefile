# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: demo test lint unit server-packages clean

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

demo: server-packages $(BIN)/.installed
	$(BIN)/rotators demo

lint: $(BIN)/.installed
	$(BIN)/ruff check rotators tests
	$(BIN)/ruff format --check rotators tests
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit

test: server-packages lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
