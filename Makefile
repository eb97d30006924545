# Two commands work on a fresh machine with only Python >= 3.10 and pip:
#   make run   - the quickstart (federated EMNIST if cached, else the offline digits)
#   make test  - the whole test suite on CPU
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test install bench clean lint

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,all]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	JAX_PLATFORMS=$${JAX_PLATFORMS:-cpu} $(PY) examples/quickstart.py

test: $(STAMP)
	$(PY) -m pytest -n 2 --durations=15 tests

bench: $(STAMP)
	$(PY) -m benchmarks.cohort

lint: $(STAMP)
	$(PY) -m pip install -q ruff && $(VENV)/bin/ruff check fedjax_like tests examples benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
