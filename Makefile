# Two commands do all setup on a fresh machine:
#   make run   - create the environment, train EmoNeXt on the bundled sample and evaluate it
#   make test  - create the environment, lint, and run the test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run repro test lint format bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/python -m flows.pipeline run

repro: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	$(BIN)/dvc push

lint: install
	$(BIN)/ruff check src tasks flows tests bench scripts
	$(BIN)/ruff format --check src tasks flows tests bench scripts

test: lint
	$(BIN)/python -m pytest

format: install
	$(BIN)/ruff format src tasks flows tests bench scripts
	$(BIN)/ruff check --fix src tasks flows tests bench scripts

bench: install
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/budgeted_run.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
