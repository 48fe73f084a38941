"""Bad input ends with one clear line and exit status 2, not a traceback."""

from __future__ import annotations

from tests.conftest import run_cli


def _error_line(result) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def test_missing_dataset_names_the_folder_and_files(tmp_path):
    result = run_cli(["data=fashion_mnist", f"data.root={tmp_path}/nowhere", "data.download=false",
                      f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert result.returncode == 2
    line = _error_line(result)
    assert f"{tmp_path}/nowhere" in line and "train-images-idx3-ubyte.gz" in line


def test_bad_dropout_is_refused_and_recorded(tmp_path):
    import json

    result = run_cli(["model.dropout=1.5", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert result.returncode == 2
    assert "model.dropout must be in [0, 1), got 1.5" in _error_line(result)
    record = json.loads((tmp_path / "run" / "error.json").read_text())
    assert record["status"] == "failed" and "model.dropout" in record["error"]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_scheduler_keys_without_a_scheduler_are_refused(tmp_path):
    result = run_cli(["experiment=cnn_fashionmnist", "scheduler=none", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert result.returncode == 2
    assert "no scheduler is chosen" in _error_line(result)



def test_unknown_experiment_and_sweep_list_the_options_before_anything_is_written(tmp_path):
    for args, listed in ((["experiment=resnet_tinyimagnet"], "resnet_tinyimagenet"),
                         (["-m", "sweep=dropuot"], "dropout"), (["sweep=nope"], "dropout")):
        result = run_cli([*args, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path)
        assert result.returncode == 2
        line = _error_line(result)
        assert "no such option" in line and listed in line, line
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_bad_numbers_fail_before_any_data_or_model_is_built(tmp_path):
    import pytest

    from lab.config.checks import check_config
    from lab.errors import ConfigError
    from tests.conftest import compose

    cases = {
        "optimizer.lr=0": "optimizer.lr must be positive, got 0",
        "optimizer.lr=-0.1": "optimizer.lr must be positive, got -0.1",
        "data.batch_size=0": "data.batch_size must be a positive integer, got 0",
        "data.eval_batch_size=-5": "data.eval_batch_size must be a positive integer, got -5",
        "data.noise_ratio=1.0": "data.noise_ratio must be in [0, 1), got 1.0",
        "model.dropout=1": "model.dropout must be in [0, 1), got 1",
        "task.top_k=0": "task.top_k must be >= 1, got 0",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            check_config(compose([override]))
    check_config(compose([]))  # the default is fine


def test_lr_zero_and_top_k_stop_before_training(tmp_path):
    """In-process (the CLI's one-line path is the dropout test's): nothing is trained or saved."""
    import pytest
    from hydra.errors import InstantiationException

    from lab.errors import ConfigError
    from tests.conftest import run_in_process

    with pytest.raises(ConfigError, match="optimizer.lr must be positive, got 0"):
        run_in_process(["optimizer.lr=0"], tmp_path / "lr")
    assert not (tmp_path / "lr").exists()  # checked before the run folder is even made
    with pytest.raises(InstantiationException, match=r"task.top_k must be an integer >= 1, got 2.5"):
        run_in_process(["task.top_k=2.5"], tmp_path / "top_k")
    assert not (tmp_path / "top_k" / "config.yaml").exists() and not (tmp_path / "top_k" / "checkpoints").exists()


def test_bash_completion_completes_python_dash_m_lab_run(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = f"""
        eval "$('{sys.executable}' -m lab.run --shell-completion install=bash)"
        COMP_LINE="{sys.executable} -m lab.run experiment=resnet2"; COMP_POINT=${{#COMP_LINE}}
        COMP_WORDS=({sys.executable} -m lab.run experiment=resnet2); COMP_CWORD=3
        _lab_completion; echo "${{COMPREPLY[@]}}"
    """
    out = subprocess.run(["bash", "-c", script], cwd=root, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "HOME": str(tmp_path)})
    assert out.stdout.split() == ["experiment=resnet20_cifar10"], out.stdout + out.stderr
