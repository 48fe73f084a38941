"""A real `python -m lab.run -m` sweep with a failing job, reported by `python -m lab.report --plot`
and analysed by notebooks/sweep_analysis.ipynb (executed in a fresh kernel)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.notebook_runner import run_notebook

# 2 epochs of 2 batches: curves with two points, in a few seconds per job.
FAST = ["trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1"]
# A failure only training can show (the pre-flight check refuses a job that cannot even be built).
FAILURE = "non-finite training loss (nan) at step 1"


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A 4-job sweep: job 1's loss turns nan in its first steps, jobs 0, 2 and 3 still run (a failed job does not
    stop the sweep), job 1's folder has error.json instead of metrics.json, and the sweep's exit
    status (1) says that some job failed."""
    out = tmp_path_factory.mktemp("report_sweep")
    result = run_cli(["-m", "optimizer.lr=0.003,1e30,0.002,0.001", *FAST, f"hydra.sweep.dir={out}"], cwd=out)
    for job in (0, 2, 3):
        assert (out / str(job) / "metrics.json").exists(), result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "1" / "error.json").exists() and not (out / "1" / "metrics.json").exists()
    assert result.returncode == 1
    return out


def test_report_of_a_real_sweep_with_a_failed_job(sweep_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "lab.report", str(sweep_dir), "--plot"], cwd=sweep_dir, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"failed: {FAILURE}" in result.stdout

    rows = list(csv.DictReader((sweep_dir / "table.csv").open()))
    lrs = [(r["job"], r["optimizer.lr"]) for r in rows]
    assert lrs == [("0", "0.003"), ("1", "1e+30"), ("2", "0.002"), ("3", "0.001")]
    assert "trainer.max_epochs" in rows[0]  # fixed overrides: a CSV column, a line above the markdown table
    metrics = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    assert rows[0]["status"] == "ok"
    for key in ("val/loss", "val/top1", "test/top1", "test/top5", "best_epoch", "wall_time_s"):
        assert float(rows[0][key]) == pytest.approx(float(metrics[key]))
    assert rows[1]["status"] == "failed" and rows[1]["error"].startswith(FAILURE)
    assert rows[2]["status"] == rows[3]["status"] == "ok"

    md = (sweep_dir / "table.md").read_text()
    assert "| job | optimizer.lr | val/loss | val/top1 | val/top5 | test/loss | test/top1 | test/top5 |" in md
    assert f"| 1 | 1e+30 |  |  |  |  |  |  |  |  | failed: {FAILURE}" in md
    assert "Same for every job: `trainer.max_epochs=2`" in md

    assert (sweep_dir / "plot_test_top1.png").read_bytes().startswith(b"\x89PNG")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(sweep_dir / "report"))
    accumulator.Reload()
    assert "report/test/top1" in accumulator.Tags()["images"]


def test_sweep_analysis_notebook_runs_on_the_sweep(sweep_dir):
    notebook = run_notebook(ROOT / "notebooks" / "sweep_analysis.ipynb", env={"LAB_SWEEP_DIR": str(sweep_dir)})
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    markdown = [out["data"]["text/markdown"] for out in outputs if "text/markdown" in out.get("data", {})]
    assert markdown and f"failed: {FAILURE}" in markdown[0]
    text = "".join(out.get("text", "") for out in outputs)
    scores = {j: json.loads((sweep_dir / str(j) / "metrics.json").read_text())["val/top1"] for j in (0, 2, 3)}
    best = [j for j in scores if scores[j] == max(scores.values())]  # job 1 failed; a tie allows any
    lr = {0: "0.003", 2: "0.002", 3: "0.001"}
    assert any(f"best by val/top1: job {j} {{'optimizer.lr': '{lr[j]}'}}" in text for j in best), text
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) == 2, text  # the TensorBoard curves, and test/top1 against the learning rate
