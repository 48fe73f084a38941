"""notebooks/function_fitting.ipynb runs its epoch sweep through the CLI and draws the curves."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ROOT
from tests.notebook_runner import run_notebook


@pytest.mark.slow  # default tier: under ~5 min on 2 cores (make test-all runs it)
def test_function_fitting_notebook_executes(tmp_path):
    start = time.perf_counter()
    # One torch thread: tiny nets, and on 2 busy cores two OpenMP threads wait on each other.
    env = {"LAB_OUTPUT_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    notebook = run_notebook(ROOT / "notebooks" / "function_fitting.ipynb", env=env, timeout=600)
    elapsed = time.perf_counter() - start
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") for out in outputs)
    assert "exit status 0" in text, text[-2000:]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) == 2, f"expected the fitted curves and the val curves, got {len(images)} images"
    sweeps = list((tmp_path / "multiruns").glob("*_function_fitting_notebook"))
    assert len(sweeps) == 1
    assert sorted(p.name for p in sweeps[0].glob("*/function_fit.png")) == ["function_fit.png"] * 4
    print(f"notebook ran in {elapsed:.1f} s")
