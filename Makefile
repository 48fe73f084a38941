# Set-up is two commands: `make run` and `make test`. Both install first (idempotent).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP_FLAGS ?= --disable-pip-version-check --progress-bar off

.PHONY: install run test test-all bench tensorboard clean

# The stamp is remade only when pyproject.toml changes, so a second install takes seconds.
# torch/torchvision are pinned first to the builds this project is tested with (served
# from local disk on x86_64 Python 3.11); elsewhere pip picks what the platform offers.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -q "torch==2.14.1" "torchvision==0.29.1" || \
		$(PY) -m pip install $(PIP_FLAGS) -q torch torchvision
	$(PY) -m pip install $(PIP_FLAGS) -q -e '.[dev]' --config-settings editable_mode=compat
	@touch $(STAMP)

install: $(STAMP)

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

tensorboard: install
	@mkdir -p outputs
	$(VENV)/bin/tensorboard --logdir outputs --port $${PORT:-6006}

clean:
	rm -rf outputs multirun lightning_logs .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
