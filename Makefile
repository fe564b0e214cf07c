# Two commands a user needs: `make demo` (the main job on Fashion-MNIST) and `make test`.
# Each sets itself up on a fresh machine: a virtual env, torch==2.13.0 first (the CPU build),
# then the project, then Fashion-MNIST from Debian's package when it is missing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.genforge-installed
MINUTES ?= 15

.PHONY: demo test data bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,inception]'
	touch $(STAMP)

data:
	@sh scripts/ensure-data.sh

demo: $(STAMP) data
	$(PY) -m genforge demo --minutes $(MINUTES) --out runs/demo

test: $(STAMP) data
	$(PY) -m pytest

bench: $(STAMP) data
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
