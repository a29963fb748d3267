# Two commands matter:  `make quick` (the main job)  and  `make test` (lint, then the whole suite).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: venv quick quick-check results test test-fast lint bench clean docs wheel wheel-smoke integrations

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

quick: $(STAMP)
	$(BIN)/weightdecay reproduce --preset quick --out runs/quick

# CI: the main job's scorecard must be what docs/results/quick.json (committed) says:
# verdicts exactly, each estimate inside the committed 90 % interval (runs differ across CPU types)
quick-check: quick
	$(BIN)/python -m weightdecay.report.publish check runs/quick --name quick

# docs/results/ and the README's result blocks, regenerated from the runs (never typed)
results: $(STAMP)
	$(BIN)/python -m weightdecay.report.publish write runs/quick --name quick
	test ! -f runs/quick/quick-seeds-100-101/stats.json || $(BIN)/python -m \
	  weightdecay.report.publish write runs/quick/quick-seeds-100-101 --name quick-replication
	test ! -f runs/full/stats.json || $(BIN)/python -m weightdecay.report.publish write \
	  runs/full --name full
	test ! -f runs/variants/stats.json || $(BIN)/python -m weightdecay.report.publish write \
	  runs/variants --name variants
	test ! -f runs/mechanism/stats.json || $(BIN)/python -m weightdecay.report.publish write \
	  runs/mechanism --name mechanism
	test ! -f runs/mechanism/mechanism-seeds-100-101-102/stats.json || $(BIN)/python -m \
	  weightdecay.report.publish write runs/mechanism/mechanism-seeds-100-101-102 \
	  --name mechanism-replication

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples docs/_hooks experiments
	$(BIN)/mypy  # the paths are [tool.mypy] files in pyproject.toml

test: lint
	$(BIN)/python -m pytest

# the suite without the tests that compile kernels (marked `compile`: torch.compile / Inductor),
# one worker process per core (pytest-xdist)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not compile" -n auto

# The documentation site -> site/ (any warning fails: --strict). Optional packages are pinned
# in requirements-*.txt and always installed with requirements.txt as constraints (torch).
$(VENV)/.docs-installed: $(STAMP) requirements-docs.txt
	$(BIN)/pip install -q -r requirements-docs.txt -c requirements.txt
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# sdist + wheel -> dist/; wheel-smoke: built and tested in a clean venv (.ci/wheel_smoke.sh)
wheel: $(STAMP)
	$(BIN)/pip install -q -r requirements-dist.txt -c requirements.txt
	$(BIN)/python -m build --outdir dist .

wheel-smoke: $(STAMP)
	$(BIN)/pip install -q -r requirements-dist.txt -c requirements.txt
	bash .ci/wheel_smoke.sh

# PyTorch Lightning, Hugging Face Trainer, optuna-dashboard: examples/ run by their tests
integrations: $(STAMP)
	$(BIN)/pip install -q -r requirements-integrations.txt -c requirements.txt
	WEIGHTDECAY_REQUIRE_OPTIONAL=1 $(BIN)/python -m pytest tests/test_integrations.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_optim.py

clean:
	rm -rf $(VENV) runs .pytest_cache site build dist
