"""The framework's own costs stay off the per-step path: epoch means without per-step logging
(device-side sums), a progress bar redrawn a few times a second, one dataset load per sweep."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar

from lab.callbacks.progress import ProgressBar
from lab.models.small_cnn import SmallCNN
from lab.tasks.classification import ClassificationTask


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_epoch_means_are_sample_weighted_and_reset_after_logging(monkeypatch):
    task = ClassificationTask(model=SmallCNN(in_channels=1, num_classes=10, image_size=(8, 8), channels=[4]),
                              optimizer=partial(torch.optim.SGD, lr=0.1), num_classes=10)
    task.track("train/loss", torch.tensor(1.0), 30)
    task.track("train/loss", torch.tensor(4.0), 10)
    assert task.running_mean("train/loss") == pytest.approx((30 * 1.0 + 10 * 4.0) / 40)
    assert task.running_mean("val/loss") is None
    logged = {}
    monkeypatch.setattr(task, "log", lambda key, value, **kw: logged.setdefault(key, float(value)))
    task.train_acc.update(torch.eye(10)[:4], torch.tensor([0, 1, 5, 3]))  # 3 of 4 right
    task.log_epoch_metrics("train", task.train_acc)
    # label 5's logit ties with classes 0, 1, 3, 4, which go first (argmax's rule): 6th, not in the top 5
    assert logged == pytest.approx({"train/loss": 1.75, "train/top1": 0.75, "train/top5": 0.75})
    assert task.running_mean("train/loss") is None  # reset for the next epoch
    assert task.train_acc.total.item() == 0


def test_progress_bar_redraws_a_few_times_a_second_and_after_the_last_batch(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("lab.callbacks.progress.time.monotonic", clock)
    drawn = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda self, tr, pl, out, batch, idx: drawn.append(idx))
    monkeypatch.setattr(ProgressBar, "is_enabled", property(lambda self: True))
    monkeypatch.setattr(RichProgressBar, "on_train_epoch_start", lambda self, tr, pl: None)
    monkeypatch.setattr(ProgressBar, "total_train_batches", property(lambda self: 50))
    bar = ProgressBar(redraws_per_second=2)
    bar.train_progress_bar_id = 0
    bar.on_train_epoch_start(None, None)  # the epoch's batch count is read here, once
    monkeypatch.setattr(ProgressBar, "total_train_batches", property(lambda self: 1 / 0))
    for idx in range(50):  # 50 batches of 0.1 s
        bar.on_train_batch_end(None, None, None, None, idx)
        clock.now += 0.1
    assert drawn[0] == 0 and drawn[-1] == 49
    assert 9 <= len(drawn) <= 12  # every 0.5 s, not 50 times
    with pytest.raises(ValueError, match="redraws_per_second"):
        ProgressBar(redraws_per_second=0)


def test_progress_bar_shows_the_running_train_loss(monkeypatch):
    monkeypatch.setattr(RichProgressBar, "get_metrics", lambda self, tr, pl: {"v_num": 0})
    task = SimpleNamespace(running_mean=lambda key: 0.25 if key == "train/loss" else None)
    bar = ProgressBar()
    assert bar.get_metrics(SimpleNamespace(training=True), task) == {"v_num": 0, "train/loss": 0.25}
    assert bar.get_metrics(SimpleNamespace(training=False), task) == {"v_num": 0}


def test_a_sweeps_jobs_share_one_dataset_load(monkeypatch):
    """Jobs differing in seed, batch size or augmentation reuse the load; another split does not."""
    from lab.data import load_cache
    from lab.data.digits import DigitsDataModule

    calls = []
    real_load = DigitsDataModule.load
    monkeypatch.setattr(DigitsDataModule, "load", lambda self: calls.append(self.split_seed) or real_load(self))
    monkeypatch.setattr(load_cache, "_LOADED", {})
    first = DigitsDataModule(seed=0, batch_size=32)
    first.setup("fit")
    second = DigitsDataModule(seed=1, batch_size=64)
    second.setup("fit")
    assert calls == [0]
    assert torch.equal(first.splits["val"][1], second.splits["val"][1])
    DigitsDataModule(seed=0, split_seed=5).setup("fit")
    assert calls == [0, 5]


def test_callbacks_with_nothing_to_do_are_checked_but_not_handed_to_the_trainer(tmp_path):
    from lab.build import build_trainer
    from lab.callbacks.features import FeaturePictures
    from tests.conftest import compose

    names = lambda trainer: {type(c).__name__ for c in trainer.callbacks}  # noqa: E731
    off = build_trainer(compose(["trainer.max_epochs=1"], tmp_path / "a"))
    assert FeaturePictures.__name__ not in names(off) and "EpochSeeding" in names(off)
    on = build_trainer(compose(["trainer.max_epochs=1", "viz.classes=[0,1]"], tmp_path / "b"))
    assert FeaturePictures.__name__ in names(on)
    # an inactive callback's settings are still checked (Hydra wraps the error)
    with pytest.raises(Exception, match=r"viz.methods: unknown \['umap'\]"):
        build_trainer(compose(["trainer.max_epochs=1", "viz.methods=[umap]"], tmp_path / "c"))


def test_top_k_accuracy_when_k_exceeds_the_classes_seen():
    from lab.metrics.accuracy import TopKAccuracy

    metric = TopKAccuracy((1, 5))
    metric.update(torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]]), torch.tensor([1, 2, 1]))
    values = metric.compute()
    assert values["top1"].item() == pytest.approx(1 / 3)
    assert values["top5"].item() == pytest.approx(1.0)  # every label is among 3 classes
