"""lab.eval, lab.predict and init_from on a real (short) training run's checkpoint."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import QUICK, ROOT, run_cli, run_in_process


def run_module(module: str, args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` in a subprocess, the way a user types it."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=300)


def error_line(result: subprocess.CompletedProcess) -> str:
    text = result.stdout + result.stderr
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text[-3000:]
    assert "Traceback" not in text
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch CLI run: its folder, metrics and best checkpoint; LAB_OUTPUT_DIR for later jobs."""
    base = tmp_path_factory.mktemp("evalrun")
    run_dir = base / "run"
    result = run_cli([*QUICK, "seed=3", f"hydra.run.dir={run_dir}"], cwd=base)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    best = [p for p in (run_dir / "checkpoints").glob("epoch*.ckpt")]
    assert len(best) == 1, best
    return {"dir": run_dir, "metrics": json.loads((run_dir / "metrics.json").read_text()), "best": best[0],
            "cwd": base, "env": {"LAB_OUTPUT_DIR": str(base / "outputs")}}


def _prepare(trained, args: list[str], out: Path):
    from lab.train.from_checkpoint import prepare

    return prepare([f"ckpt_path={trained['best']}", *args, f"paths.output_dir={out}"], ["splits", "name"], "lab.eval")


def test_eval_reproduces_the_runs_test_metrics(trained):
    before = (trained["dir"] / "metrics.json").read_text()
    result = run_module("lab.eval", [f"ckpt_path={trained['best']}"], trained["cwd"], trained["env"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folders = list((trained["cwd"] / "outputs" / "evals").iterdir())
    assert len(folders) == 1 and folders[0].name.endswith("_digits_small_cnn"), folders
    metrics = json.loads((folders[0] / "metrics.json").read_text())
    for key in ("test/top1", "test/top5", "test/loss"):
        assert abs(metrics[key] - trained["metrics"][key]) <= 1e-6, (key, metrics[key], trained["metrics"][key])
    assert metrics["ckpt_path"] == str(trained["best"].resolve())
    assert metrics["ckpt_epoch"] == trained["metrics"]["best_epoch"]
    assert (folders[0] / "config.yaml").is_file() and (folders[0] / "confusion_test.png").is_file()
    assert (trained["dir"] / "metrics.json").read_text() == before  # the training run is left alone
    assert sorted(p.name for p in (trained["dir"] / "checkpoints").iterdir()) == sorted(
        [trained["best"].name, "last.ckpt"])


def test_eval_overrides_give_the_same_metrics(trained, tmp_path):
    """Another eval batch size, the cpu trainer group, every batch; val of the best checkpoint too."""
    from lab.train.evaluate import evaluate

    job = _prepare(trained, ["data.eval_batch_size=45", "trainer=cpu", "trainer.limit_test_batches=null",
                             "trainer.limit_val_batches=null", "~callbacks.progress_bar"], tmp_path)
    assert job.cfg.trainer.accelerator == "cpu" and job.cfg.trainer.max_epochs == 2  # the run's overrides kept
    metrics = evaluate(job, tmp_path, splits=["val", "test"])
    run = trained["metrics"]
    assert abs(metrics["test/top1"] - run["test/top1"]) <= 1e-6
    assert abs(metrics["test/top5"] - run["test/top5"]) <= 1e-6
    assert metrics["test/loss"] == pytest.approx(run["test/loss"], rel=1e-5)
    assert abs(metrics["val/top1"] - run["val/top1_best"]) <= 1e-6  # the best checkpoint's own val score
    assert "val/top1_best" not in metrics
    assert json.loads((tmp_path / "metrics.json").read_text())["test/top1"] == metrics["test/top1"]


def test_predict_writes_one_row_per_test_sample(trained, tmp_path):
    from lab.data.digits import DigitsDataModule
    from lab.train.predict import predict

    job = _prepare(trained, [], tmp_path)
    path = predict(job, tmp_path)
    assert path == tmp_path / "predictions.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    data = DigitsDataModule()
    data.setup()
    assert len(rows) == data.split_sizes()["test"]
    names = {str(i) for i in range(10)}
    for i, row in enumerate(rows):
        assert row["index"] == str(i)
        probs = [float(row[f"top{j}_prob"]) for j in range(1, 6)]
        assert all(0.0 <= p <= 1.0 for p in probs) and sum(probs) <= 1.0 + 1e-5
        assert probs == sorted(probs, reverse=True)
        assert {row["label"], row["predicted"]} | {row[f"top{j}"] for j in range(1, 6)} <= names
        assert row["predicted"] == row["top1"] and float(row["probability"]) == probs[0]
        assert row["correct"] == str(int(row["label"] == row["predicted"]))
        assert int(row["label"]) == int(data.splits["test"][1][i])
    accuracy = sum(row["correct"] == "1" for row in rows) / len(rows)
    assert abs(accuracy - trained["metrics"]["test/top1"]) <= 1e-6  # the whole test split, as the run tested


@pytest.mark.parametrize("entry,folder", [("eval", "evals"), ("predict", "predictions")])
def test_entry_configs_compose(entry, folder, tmp_path):
    """conf/eval.yaml and conf/predict.yaml: their own keys, and a new folder under outputs/<folder>/."""
    from hydra import compose, initialize_config_dir

    from lab.config.paths import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name=entry, overrides=["ckpt_path=x.ckpt", "name=digits_small_cnn"],
                      return_hydra_config=True)
    assert cfg.ckpt_path == "x.ckpt" and cfg.run_dir is None
    run_dir = str(cfg.hydra.run.dir)
    assert f"/{folder}/" in run_dir and run_dir.endswith("_digits_small_cnn"), run_dir


def test_init_from_starts_from_the_checkpoints_weights(trained, tmp_path):
    import torch

    from lab.build import build_parts
    from lab.runs.checkpoints import init_weights
    from tests.conftest import compose

    cfg = compose([f"init_from={trained['best']}"], output_dir=tmp_path / "unit")
    task = build_parts(cfg).task
    init_weights(task, cfg.init_from)
    saved = torch.load(trained["best"], weights_only=True, map_location="cpu")["state_dict"]
    assert all(torch.equal(value, saved[key]) for key, value in task.state_dict().items())
    # No training: testing the loaded weights gives the source run's test metrics.
    metrics = run_in_process([f"init_from={trained['best']}", "trainer.max_epochs=0", "scheduler=none",
                              "trainer.limit_test_batches=2"], tmp_path / "zero")
    assert abs(metrics["test/top1"] - trained["metrics"]["test/top1"]) <= 1e-6
    assert metrics["epochs"] == 0


def test_init_from_fine_tunes_on_train_and_val(trained, tmp_path, capsys):
    metrics = run_in_process([*QUICK, "trainer.max_epochs=1", f"init_from={trained['best']}",
                              "data.train_on=[train,val]"], tmp_path)
    out = capsys.readouterr().out
    assert "initialised the weights from" in out
    assert "data.train_on includes val" in out and "no longer held out" in out
    assert metrics["epochs"] == 1 and (tmp_path / "metrics.json").is_file()


def test_train_on_merges_val_and_refuses_test():
    from lab.data.digits import DigitsDataModule
    from lab.errors import ConfigError

    plain, merged = DigitsDataModule(), DigitsDataModule(train_on=["train", "val"])
    sizes, merged_sizes = plain.split_sizes(), merged.split_sizes()
    assert merged_sizes["train"] == sizes["train"] + sizes["val"]
    assert merged_sizes["val"] == sizes["val"] and merged_sizes["test"] == sizes["test"]
    with pytest.raises(ConfigError, match="must not include test"):
        DigitsDataModule(train_on=["train", "test"])


def test_a_checkpoint_of_another_model_is_one_line(trained, tmp_path):
    from lab.errors import ConfigError
    from lab.train.evaluate import evaluate

    result = run_cli(["model=cnn", "model.widths=[8,16]", f"init_from={trained['best']}",
                      f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert result.returncode == 2
    line = error_line(result)
    assert "does not fit this model" in line and "missing model." in line and "unexpected model." in line
    assert "model=small_cnn" in line  # where the checkpoint came from
    assert not (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / "checkpoints").exists()
    job = _prepare(trained, ["model=cnn", "model.widths=[8,16]"], tmp_path / "eval")
    with pytest.raises(ConfigError, match=r"ckpt_path: .* does not fit this model: missing .*with model=cnn"):
        evaluate(job, tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_resolved_config_yaml_is_enough(trained, tmp_path):
    """A run folder without .hydra/: the resolved config.yaml, its folder paths moved to the new job."""
    copy = tmp_path / "copy"
    shutil.copytree(trained["dir"], copy, ignore=shutil.ignore_patterns(".hydra", "*.tfevents*"))
    job = _prepare({**trained, "best": copy / "checkpoints" / trained["best"].name}, [], tmp_path / "eval")
    assert job.config_file == (copy / "config.yaml").resolve()
    assert job.cfg.trainer.default_root_dir == str(tmp_path / "eval")
    assert job.cfg.callbacks.model_checkpoint.dirpath == str(tmp_path / "eval" / "checkpoints")


def test_bad_command_lines_stop_before_anything_is_written(trained, tmp_path):
    env = {"LAB_OUTPUT_DIR": str(tmp_path / "outputs")}
    result = run_module("lab.eval", [], tmp_path, env)
    assert result.returncode == 2 and "ckpt_path is required: python -m lab.eval ckpt_path=" in error_line(result)
    result = run_module("lab.predict", [f"ckpt_path={tmp_path}/nowhere.ckpt"], tmp_path, env)
    assert result.returncode == 2 and f"{tmp_path}/nowhere.ckpt does not exist" in error_line(result)
    lone = tmp_path / "lone.ckpt"
    shutil.copy(trained["best"], lone)
    result = run_module("lab.eval", [f"ckpt_path={lone}", "data.eval_batchsize=7"], tmp_path, env)
    assert result.returncode == 2 and "looked for" in error_line(result) and "run_dir=" in error_line(result)
    result = run_module("lab.eval", [f"ckpt_path={lone}", f"run_dir={trained['dir']}", "data.eval_batchsize=7"],
                        tmp_path, env)
    assert result.returncode == 2 and "has no data.eval_batchsize; data has" in error_line(result)
    assert not (tmp_path / "outputs").exists()


def test_error_lines_keep_brackets(capsys):
    """Messages name lists like [train, val]: printed as text, not swallowed as rich markup."""
    from lab.utils.console import print_error

    print_error("data.train_on must be [train] or [train, val], got ['val']")
    assert "must be [train] or [train, val], got ['val']" in capsys.readouterr().out
