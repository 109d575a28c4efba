# The README's two commands: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv and install the project into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: demo test docs lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m benchmarks.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyright --pythonpath $(BIN)/python
	$(MAKE) --no-print-directory docs
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal --durations=25 --nbmake

# The documentation (HTML in docs/_build/html), rebuilt from scratch; any warning fails it.
docs: $(STAMP)
	$(BIN)/python -m sphinx -b html -E -W --keep-going -q docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/pyright --pythonpath $(BIN)/python

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache docs/_build
