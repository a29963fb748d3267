# Two commands matter:  `make quick` (the main job)  and  `make test` (lint, then the whole suite).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: venv quick test lint bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

quick: $(STAMP)
	$(BIN)/weightdecay reproduce --preset quick --out runs/quick

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy  # the paths are [tool.mypy] files in pyproject.toml

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_optim.py

clean:
	rm -rf $(VENV) runs .pytest_cache
