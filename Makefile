# Two commands a user needs: `make demo` (the main job on Fashion-MNIST) and `make test`.
# Each sets itself up on a fresh machine: a virtual env, torch==2.13.0 first (the CPU build),
# then the project, then the datasets (Fashion-MNIST from Debian, emoji from npm) when missing.
# `make demo DATA=emoji` runs the same job on the colour emoji, scored with Inception features.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.genforge-installed
MINUTES ?= 15
DATA ?= fashion-mnist
DEMO_OUT := runs/demo$(if $(filter fashion-mnist,$(DATA)),,-$(DATA))

.PHONY: demo test lint data browser bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,inception]'
	touch $(STAMP)

data:
	@sh scripts/ensure-data.sh all

# The report's browser test needs Chromium: installed when missing and we may (root with apt-get).
# Without it the test is skipped, unless GENFORGE_REQUIRE_BROWSER is set (CI sets it).
browser:
	-@sh scripts/ensure-chromium.sh

demo: $(STAMP) data
	$(PY) -m genforge demo --minutes $(MINUTES) --data $(DATA) --out $(DEMO_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP) data browser lint
	$(PY) -m pytest

bench: $(STAMP) data
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
