# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
DEMO_HOME := $(CURDIR)/.demo/registry
PORT ?= 8000

.PHONY: venv test lint typecheck unit demo clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check $(wildcard src tests bench examples)

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck unit

demo: venv
	@rm -rf .demo && mkdir -p .demo
	SHIPML_HOME=$(DEMO_HOME) $(BIN)/python examples/demo.py .demo
	SHIPML_HOME=$(DEMO_HOME) bash examples/demo.sh .demo
	SHIPML_HOME=$(DEMO_HOME) PORT=$(PORT) bash examples/serve_demo.sh .demo

clean:
	rm -rf .demo .pytest_cache .mypy_cache .ruff_cache
