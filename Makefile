# Two commands a user needs: `make demo` (the main job on Fashion-MNIST) and `make test`.
# Each sets itself up on a fresh machine: a virtual env, torch==2.13.0 first (the CPU build),
# then the project, then the data it needs when missing: `make demo` only the dataset it runs on,
# `make test` both (Fashion-MNIST from Debian, emoji from npm; the tests read both).
# `make demo DATA=emoji` runs the same job on the colour emoji, scored with Inception features,
# into runs/demo-emoji (genforge demo's default folder per dataset). `make clean` removes the
# virtual env and caches and keeps runs/; `make distclean` removes runs/ too.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.genforge-installed
MINUTES ?= 15
DATA ?= fashion-mnist
# What `make demo` fetches: the named dataset it runs on (a path: nothing).
DEMO_FETCH := $(filter fashion-mnist emoji,$(DATA))

.PHONY: demo test lint data browser bench clean distclean

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

demo: $(STAMP)
	$(if $(DEMO_FETCH),@sh scripts/ensure-data.sh $(DEMO_FETCH))
	$(PY) -m genforge demo --minutes $(MINUTES) --data $(DATA)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP) data browser lint
	$(PY) -m pytest

bench: $(STAMP) data
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache

distclean: clean
	rm -rf runs
