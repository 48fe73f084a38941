"""Sweeps through Hydra's launcher and sweeper plugins, as a user types them: submitit_local,
joblib, an Optuna study with a failing and a pruned trial, SLURM up to sbatch; lab.results.sweep_status's
checks. tests/test_optuna.py has the Optuna study killed and resumed.

Each job of a subprocess launcher imports torch afresh (5-10 s on 2 cores), so the sweeps are
short: 1 epoch of 2 batches on digits.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import ROOT, compose, run_cli

TINY = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0"]
DROPOUT_ERROR = "model.dropout must be in [0, 1), got 1.5"


def _out(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-4000:] + result.stderr[-4000:]


def _jobs(sweep: Path) -> list[str]:
    return sorted((p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=int)


def _report(sweep: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "lab.report", str(sweep)], cwd=sweep, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # default tier: under ~5 min on 2 cores (make test-all runs it)
def test_submitit_local_runs_both_jobs_each_in_its_folder(tmp_path):
    """The issue's command (`-m hydra/launcher=submitit_local optimizer.lr=0.1,0.01 trainer.max_epochs=1`),
    with fewer batches: each job in its own process, results where the basic launcher puts them."""
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", "hydra/launcher=submitit_local", "optimizer.lr=0.1,0.01", *TINY,
                      f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode == 0, _out(result)
    assert _jobs(sweep) == ["0", "1"]
    for job, lr in (("0", "0.1"), ("1", "0.01")):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert 0.0 <= metrics["test/top1"] <= 1.0
        assert f"optimizer.lr={lr}" in yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
    assert list((sweep / ".submitit").glob("*/*_log.out")), "submitit keeps each job's log in <sweep>/.submitit/"
    assert (sweep / "multirun.yaml").is_file()


@pytest.mark.slow  # ~50 s on 2 busy cores; the basic launcher's failure path is in the default tier
def test_joblib_a_failed_job_does_not_stop_the_other_and_the_sweep_exits_1(tmp_path):
    """Two loky worker processes: job 1 fails at model build, job 0 still trains; error.json in
    job 1's folder, exit status 1, and lab.report marks it."""
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.dropout=0.2,1.5", *TINY,
                      f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode == 1, _out(result)
    assert (sweep / "0" / "metrics.json").is_file(), _out(result)
    error = json.loads((sweep / "1" / "error.json").read_text())
    assert error["error"] == DROPOUT_ERROR and not (sweep / "1" / "metrics.json").exists()
    report = _report(sweep)
    assert report.returncode == 0 and f"failed: {DROPOUT_ERROR}" in report.stdout, _out(report)


def test_optuna_three_trials_one_fails_one_is_pruned_the_study_goes_on(tmp_path):
    """hparams_search=optuna (lab's sweeper, Optuna 4+) with a test-only dropout choice and a median pruner
    that judges from the first COMPLETE trial on: with sampler seed 1 the three trials draw dropout 0.1, 1.5,
    0.1. Trial 1 fails in the middle (FAIL, error.json); trial 2 is below trial 0 after its first of two
    epochs and stops there (PRUNED, the pruning callback); the study is in <sweep>/optuna.db,
    optimization_results.yaml names the best trial, the sweep exits 1 with one summary line, and lab.report
    lists every trial with its state, read from the database."""
    import optuna

    sweep = tmp_path / "study"
    result = run_cli(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=1",
                      "hydra.sweeper.pruner.n_startup_trials=1", "model.dropout=choice(0.1,1.5)",
                      "trainer.max_epochs=2", *TINY[1:], f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    out = _out(result)
    assert result.returncode == 1, out
    assert _jobs(sweep) == ["0", "1", "2"], out
    dropouts = {}
    for job in _jobs(sweep):
        overrides = yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        assert {o.split("=")[0] for o in overrides} >= {"optimizer.lr", "model.dropout", "optimizer.weight_decay"}
        dropouts[job] = next(o.split("=")[1] for o in overrides if o.startswith("model.dropout="))
    assert dropouts == {"0": "0.1", "1": "1.5", "2": "0.1"}
    assert [job for job in _jobs(sweep) if (sweep / job / "error.json").exists()] == ["1"]
    assert f"optuna: trial 1 FAIL: {DROPOUT_ERROR}" in result.stdout
    assert "optuna: trial 2 PRUNED at epoch 0" in result.stdout
    assert f"error: 1 of 3 trials failed (Optuna: FAIL, the study finished): job 1: {DROPOUT_ERROR}" in result.stdout

    study = optuna.load_study(study_name="digits_small_cnn", storage=f"sqlite:///{sweep / 'optuna.db'}")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "PRUNED"]
    assert trials[2].intermediate_values[0] < trials[0].intermediate_values[0]  # the median of one trial
    assert trials[2].user_attrs["pruned_at_epoch"] == 0 and trials[1].user_attrs["error"] == DROPOUT_ERROR
    assert json.loads((sweep / "2" / "metrics.json").read_text())["epochs"] == 1  # stopped after its 1st epoch
    best = json.loads((sweep / "0" / "metrics.json").read_text())["val/top1_best"]
    assert trials[0].value == pytest.approx(best)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(best) and results["best_trial"] == 0
    assert set(results["best_params"]) == {"optimizer.lr", "model.dropout", "optimizer.weight_decay"}

    report = _report(sweep)
    assert report.returncode == 0, _out(report)
    assert "Optuna study (maximize, 3 trials): best job 0" in report.stdout
    assert f"failed: {DROPOUT_ERROR}" in report.stdout and "ok, pruned at epoch 0" in report.stdout
    assert "Optuna study `digits_small_cnn` (maximize val/top1_best) in optuna.db: 3 trials: 1 COMPLETE, " \
           "1 FAIL, 1 PRUNED" in report.stdout
    rows = list(csv.DictReader((sweep / "table.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    rows = list(csv.DictReader((sweep / "trials.csv").open()))
    assert [(r["trial"], r["state"], r["error"]) for r in rows] == [
        ("0", "COMPLETE", ""), ("1", "FAIL", DROPOUT_ERROR), ("2", "PRUNED", "")]


@pytest.mark.parametrize("args, expected", [
    (["experiment=mlp_function", "hydra.sweeper.direction=maximize"],
     "hydra.sweeper.direction=maximize, but lab.run returns val/mse_best"),
    (["model=cnn"], "hydra.sweeper.params searches model.dropout, which this config (model=cnn, "
                    "optimizer=adamw) does not have; model has "),
], ids=["direction_against_the_objective", "model_without_the_key"])
def test_optuna_search_that_cannot_work_stops_before_the_first_trial(tmp_path, args, expected):
    sweep = tmp_path / "study"
    start = time.perf_counter()
    result = run_cli(["-m", "hparams_search=optuna", *args, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode == 2, _out(result)
    lines = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], _out(result)
    assert not sweep.exists() or not _jobs(sweep)
    assert time.perf_counter() - start < 60  # no job started, no torch imported


@pytest.mark.slow  # the default tier is at its 5-minute budget (make test-all runs it)
def test_slurm_config_reaches_sbatch_with_lab_defaults(tmp_path):
    """hydra/launcher=slurm on a machine without SLURM: fake srun/sbatch on PATH; sbatch keeps the
    script submitit wrote and refuses it, so the sweep stops with sbatch's message (status 1)."""
    bin_dir, kept = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {kept}\necho "sbatch: error: no cluster here" >&2\nexit 1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
                      "hydra.launcher.tasks_per_node=4", "trainer=ddp", "trainer.devices=4", "optimizer.lr=0.1,0.01",
                      f"hydra.sweep.dir={sweep}"], cwd=tmp_path,
                     env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 1 and "sbatch: error: no cluster here" in result.stderr, _out(result)
    script = kept.read_text()
    for line in ("--partition=gpu", "--gpus-per-node=4", "--ntasks-per-node=4", "--nodes=1", "--time=240",
                 "--cpus-per-task=8", "--mem=32GB", "--array=0-1%2", "--job-name=lab_digits_small_cnn",
                 f"--output={sweep}/.submitit/%A_%a/%A_%a_0_log.out"):
        assert f"#SBATCH {line}\n" in script, script
    assert "-m submitit.core._submit" in script


def test_launcher_configs_keep_lab_job_folders(tmp_path):
    """Every launcher writes job N into <sweep>/N (hydra.sweep.subdir) and the callback is registered."""
    for launcher in ("submitit_local", "joblib", "slurm"):
        cfg = compose([f"hydra/launcher={launcher}"])
        assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}"
        assert cfg.hydra.callbacks.sweep_status._target_ == "lab.results.sweep_status.SweepStatus"
    cfg = compose(["hparams_search=optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.lab_optuna_sweeper.sweeper.LabOptunaSweeper"
    assert sweeper.direction == "maximize" and sweeper.max_failure_rate == 1.0 and sweeper.n_jobs == 1
    assert sweeper.storage is None and sweeper.study_name == cfg.name  # sqlite:///<sweep dir>/optuna.db
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 42
    assert sweeper.pruner._target_ == "optuna.pruners.MedianPruner"
    assert cfg.callbacks.optuna_pruning._target_ == "lab.callbacks.pruning.OptunaPruning"
    assert set(sweeper.params) == {"optimizer.lr", "model.dropout", "optimizer.weight_decay"}
    hyperband = compose(["hparams_search=optuna", "hydra/sweeper/pruner=hyperband"]).hydra.sweeper.pruner
    assert hyperband._target_ == "optuna.pruners.HyperbandPruner" and hyperband.max_resource == "auto"


def test_sweep_status_counts_only_this_sweeps_errors(tmp_path):
    """error.json older than the sweep's start (an earlier sweep into the same folder) is not a failure."""
    from lab.results.sweep_status import failed_jobs

    for num in range(3):
        (tmp_path / str(num) / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / "error.json").write_text(json.dumps({"error": "old\nfailure"}))
    os.utime(tmp_path / "0" / "error.json", (1e9, 1e9))
    (tmp_path / "2" / "error.json").write_text(json.dumps({"error": "loss is nan\n at step 3"}))
    (tmp_path / "notajob").mkdir()
    assert failed_jobs(tmp_path, since=time.time() - 60) == [("2", "loss is nan at step 3")]
    assert [name for name, _ in failed_jobs(tmp_path)] == ["0", "2"]


def test_importing_the_callback_is_light():
    code = ("import sys, lab.results.sweep_status; "
            "print(any(m in sys.modules for m in ('torch', 'lightning', 'lab.run')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
