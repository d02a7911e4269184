# Two commands do all the set-up on a fresh machine:
#   make demo   - the demo pipeline on the local stack
#   make test   - the whole test suite on the local stack
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test stack lint

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(BIN)/.installed

stack: setup
	$(BIN)/migwatch stack up

demo: stack
	$(BIN)/migwatch demo

test: stack
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check migwatch tasks flows tests
