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

