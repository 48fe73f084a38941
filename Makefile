# Set-up is two commands: `make run` and `make test`. Both install first (idempotent).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP_FLAGS ?= --disable-pip-version-check --progress-bar off

.PHONY: install lock run test test-all bench gpu-check studies tensorboard clean

# The stamp is remade only when pyproject.toml or requirements.lock changes, so a second
# install takes seconds. It installs exactly the lock (Python 3.11 on x86_64; torch 2.14.1 and
# torchvision 0.29.1 are served from local disk there), then lab itself without dependencies,
# built with the locked setuptools, and `pip check` proves the set consistent.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -q --no-deps -r requirements.lock
	$(PY) -m pip install $(PIP_FLAGS) -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	$(PY) -m pip check
	@touch $(STAMP)

install: $(STAMP)

# Re-resolves pyproject.toml in a throwaway venv and rewrites requirements.lock (docs/dependencies.md).
lock:
	PYTHON=$(PYTHON) .ci/lock.sh

run: install
	$(PY) -m lab.run $(ARGS)

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m "slow or not slow"

# Every bench/ script (lab vs a plain reference, same run); rewrites docs/benchmarks.md.
# Run on an idle machine: 8-20 minutes on 2 cores. BENCH_ARGS="--quick" for a rough look.
bench: install
	$(PY) bench/run_all.py $(BENCH_ARGS)

# lab's GPU path end to end on one CUDA GPU, offline, under 10 minutes (issue 21): PASS/FAIL per path,
# figures in outputs/gpu_check/figures.json, exit 1 on a FAIL. Without a GPU it says so in one line.
# GPU_CHECK_ARGS="--device cpu" runs every path small on the CPU; "--doc" also updates docs/benchmarks.md.
gpu-check: install
	$(PY) bench/gpu_check.py $(GPU_CHECK_ARGS)

# Every study of conf/study/ on the real Fashion-MNIST (apt-get install dataset-fashion-mnist), 3 seeds
# each, into outputs/studies/; rewrites docs/studies.md. About 2 hours on 2 cores.
# STUDIES="dropout_cnn lr_basecnn" runs some; the page keeps every finished study.
studies: install
	$(PY) -m lab.results.studies --run $(STUDIES)

tensorboard: install
	@mkdir -p outputs
	$(VENV)/bin/tensorboard --logdir outputs --port $${PORT:-6006}

clean:
	rm -rf outputs multirun lightning_logs .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
