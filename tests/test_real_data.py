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


@pytest.mark.slow  # default tier: under ~5 min on 2 cores (make test-all runs it)
@needs_fashion
def test_triplet_two_stages_on_the_real_files(tmp_path):
    metrics = run_in_process([
        "experiment=triplet_fashionmnist", f"data.root={FASHION_DIR}", "data.download=false", "trainer.max_epochs=2",
        "task.stage1_epochs=1", "trainer.limit_train_batches=100", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "viz.max_per_class=40", "viz.projector=false",
    ], tmp_path)
    # 100 class-balanced steps of triplet loss already make neighbours share a garment class
    # far above chance (0.10); the classifier trained on the frozen features in stage 2 too.
    assert metrics["train/stage"] == 2 and metrics["epochs"] == 2
    assert metrics["test/precision_at_1"] > 0.6 and metrics["test/map_at_r"] > 0.3, metrics
    assert metrics["test/top1"] > 0.5, metrics
    for name in ("pca_train", "pca_test", "tsne_train", "tsne_test"):
        assert (tmp_path / "features" / f"{name}.png").stat().st_size > 10_000
    classes = {r.split(",")[2] for r in (tmp_path / "features" / "tsne_test.csv").read_text().splitlines()[1:]}
    assert classes == {"T-shirt/top", "Trouser", "Pullover", "Sneaker", "Bag"}


@pytest.mark.slow
@needs_fashion
def test_triplet_vs_cross_entropy_on_fashion_mnist(tmp_path):
    """The study: the full two-stage triplet + cross-entropy experiment and plain
    cross-entropy on the same model, batches and metrics (5 epochs each)."""
    common = ["experiment=triplet_fashionmnist", f"data.root={FASHION_DIR}", "data.download=false",
              "viz.projector=false"]
    triplet = run_in_process([*common, "metric_loss=triplet_ce"], tmp_path / "triplet")
    ce = run_in_process([*common, "metric_loss=ce"], tmp_path / "ce")
    for metrics in (triplet, ce):
        assert metrics["epochs"] == 5
        assert metrics["test/top1"] >= 0.88 and metrics["test/precision_at_1"] >= 0.85, metrics
    assert triplet["train/stage"] == 2 and ce["train/stage"] == 0
    assert (tmp_path / "triplet" / "features" / "tsne_test.png").exists()
