# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-all lint format bench clean

$(STAMP): pyproject.toml .ci/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c .ci/constraints.txt -e ".[test,recipes]"
	touch $(STAMP)

install: $(STAMP)

## the main job on the embedded offline defaults
demo: $(STAMP)
	$(BIN)/python recipes/demo.py --config configs/demo.yaml

## lint, then the unit, statistical and distributed tests
test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check mine_reg recipes tests
	$(BIN)/ruff format --check mine_reg recipes tests

format: $(STAMP)
	$(BIN)/ruff format mine_reg recipes tests
	$(BIN)/ruff check --fix mine_reg recipes tests

## estimator benchmark (accuracy and speed targets); prints markdown tables
bench: $(STAMP)
	$(BIN)/python recipes/benchmarks/estimators.py

clean:
	rm -rf $(VENV) outputs wandb .pytest_cache .ruff_cache
