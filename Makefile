# Development entry points. `make test` works on a fresh machine with Python >= 3.10.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-fast lint typecheck bench stack clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[all]" --group test --group bench --group lint

test: install  # with coverage: fails under pyproject's [tool.coverage.report] fail_under
	$(BIN)/python -m pytest -q --cov --cov-report=term

test-fast: install  # everything but the soak and the heavier fault scenarios
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/hadolint stack/Dockerfile

typecheck: install
	$(BIN)/mypy -p cached_tei -p langchain_cached_tei -p llama_index_cached_tei && $(BIN)/mypy --strict stack/

bench: install
	$(BIN)/python bench/run.py

stack:
	$(PYTHON) stack/generate.py

clean:
	rm -rf $(VENV) dist build .pytest_cache
