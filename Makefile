# The two commands of a fresh machine: `make demo` (the whole system on synthetic data, CPU) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-all demo lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/pytest -q

test-all: install
	$(BIN)/pytest -q -m "slow or not slow"

demo: install
	$(BIN)/python tools/demo.py

lint: install
	$(BIN)/ruff check emotion_llama encoders datasets tools tests

clean:
	rm -rf outputs .pytest_cache
