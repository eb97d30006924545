# Two commands work on a fresh machine with only Python >= 3.10 and pip:
#   make run   - a short real experiment through the CLI (offline digits: train, evaluate,
#                checkpoint, CSV, TensorBoard, plot); examples/quickstart.py is the TFF seed program
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

# A short, real experiment through the CLI: 30 rounds of FedAvg on the offline digits, evaluated on
# the test clients every 5 rounds, checkpointed every 10; writes runs/quickstart/ (metrics.csv,
# curves.png, tensorboard/, checkpoints/) and prints where everything is.
run: $(STAMP)
	JAX_PLATFORMS=$${JAX_PLATFORMS:-cpu} $(PY) -m fedjax_like train --config digits \
	  --training.num_rounds 30 --evaluation.every 5 --output.checkpoint_every 10 \
	  --output.run_name quickstart --output.overwrite true

test: $(STAMP)
	$(PY) -m pytest -n 2 --durations=15 tests

bench: $(STAMP)
	$(PY) -m benchmarks.cohort

lint: $(STAMP)
	$(PY) -m pip install -q ruff && $(VENV)/bin/ruff check fedjax_like tests examples benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
