# Both main targets set up the cached virtual environment themselves (tools/venv.sh).
SHELL := /bin/bash
VENV = $(shell bash tools/venv.sh)
PY = $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: venv test test-fast test-extras lint demo experiment docs clean

venv:
	@bash tools/venv.sh

# one pytest worker per core (at most 4), whole files per worker (module fixtures run once), one
# torch thread each (tests/conftest.py)
XDIST = -n auto --maxprocesses 4 --dist loadfile

test:  ## full test suite (slow tests included), < 15 min on 2 CPU cores
	@V=$$(bash tools/venv.sh) && $$V/bin/ruff check gsg_zoo tests benchmarks tools docs && $$V/bin/ruff format --check -q gsg_zoo tests benchmarks tools docs && \
	  $$V/bin/python -m pytest -q -ra --durations=15 $(XDIST) $(PYTEST_ARGS)

test-fast:
	@V=$$(bash tools/venv.sh) && $$V/bin/python -m pytest -q -m "not slow" $(XDIST) $(PYTEST_ARGS)

lint:
	@V=$$(bash tools/venv.sh) && $$V/bin/ruff check . && $$V/bin/ruff format --check gsg_zoo tests

demo:  ## pretrain SimSiam+GSG on Fashion-MNIST (found or downloaded; offline: the built-in data), evaluate, export, reload, write the card
	@V=$$(bash tools/venv.sh) && $$V/bin/gsg demo --out runs/demo --download

experiment:  ## the paper's two claims at CPU scale on the built-in data, 3 seeds, PIL views (40 min of training on 2 cores: docs/results/index.md)
	@V=$$(bash tools/venv.sh) && $$V/bin/gsg experiment claims --seeds 0,1,2 --epochs 4 --set data.batch_augment=false --out runs/claims

clean:
	rm -rf runs build *.egg-info .pytest_cache

docs:  ## the documentation site (Sphinx + MyST), warnings are errors; output in docs/_build/html
	@V=$$(bash tools/venv.sh) && $$V/bin/python tools/results_tables.py && \
	  $$V/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html && echo "docs/_build/html/index.html"
