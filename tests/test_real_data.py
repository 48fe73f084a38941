"""Runs on real data: digits (bundled with scikit-learn) and Fashion-MNIST (Debian package)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FASHION_DIR, run_cli, run_in_process

needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason=f"Fashion-MNIST files not in {FASHION_DIR} (apt-get install dataset-fashion-mnist)",
)


@needs_fashion
def test_fashion_mnist_short_run_on_the_real_files(tmp_path):
    metrics = run_in_process([
        "experiment=cnn_fashionmnist", f"data.root={FASHION_DIR}", "data.download=false", "trainer.max_epochs=1",
        "trainer.limit_train_batches=60", "trainer.limit_val_batches=2",
    ], tmp_path)
    # 60 steps of Adam already separate the 10 garment classes well beyond chance (0.10).
    assert metrics["test/top1"] > 0.70, metrics
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test/top1"] == pytest.approx(metrics["test/top1"])


@pytest.mark.slow
@needs_fashion
def test_cnn_fashionmnist_reaches_091_in_3_epochs(tmp_path):
    metrics = run_in_process(["experiment=cnn_fashionmnist", f"data.root={FASHION_DIR}"], tmp_path)
    assert metrics["epochs"] == 3
    assert metrics["test/top1"] >= 0.91, metrics


@pytest.mark.slow
def test_default_run_reaches_097_on_digits(tmp_path):
    result = run_cli([f"hydra.run.dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test/top1"] >= 0.97, metrics
    assert metrics["wall_time_s"] < 60, metrics
    assert "final metrics" in result.stdout and f"tensorboard --logdir {tmp_path}" in result.stdout
