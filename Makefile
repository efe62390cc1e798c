# Every target creates .venv and installs the package (with its dev extras) when needed.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
ARGS    ?=

.PHONY: help install run test test-slow test-all bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package and its dependencies

run: $(STAMP)  ## train the default experiment: DCGAN on the embedded 28x28 MNIST digits (ARGS="key=value ..." adds overrides)
	$(PY) -m gan.run $(ARGS)

test: $(STAMP)  ## the fast test suite (CPU, a few minutes)
	$(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP)  ## only the slow end-to-end tests
	$(PY) -m pytest -q -m slow $(ARGS)

test-all: $(STAMP)  ## every test, slow ones included
	$(PY) -m pytest -q -m "slow or not slow" $(ARGS)

bench: $(STAMP)  ## framework overhead and metric speed benchmarks
	$(PY) experiments/bench_overhead.py
	$(PY) experiments/bench_fid.py

clean:  ## remove the virtual environment and caches (runs/ is kept)
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
