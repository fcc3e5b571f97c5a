# Development entry points. `make test` works on a fresh machine with Python >= 3.10.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test bench stack clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[all]" --group test --group bench

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/run.py

stack:
	$(PYTHON) stack/generate.py

clean:
	rm -rf $(VENV) dist build .pytest_cache
