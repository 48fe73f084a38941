"""The framework's own costs stay off the per-step path: epoch means without per-step logging,
a progress bar redrawn a few times a second, last.ckpt at most every few seconds."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from lab.callbacks.checkpoint import Checkpoint
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
    assert logged == pytest.approx({"train/loss": 1.75, "train/top1": 0.75, "train/top5": 1.0})
    assert task.running_mean("train/loss") is None  # reset for the next epoch
    assert task.train_acc.total.item() == 0


def test_progress_bar_redraws_a_few_times_a_second_and_after_the_last_batch(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("lab.callbacks.progress.time.monotonic", clock)
    drawn = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda self, tr, pl, out, batch, idx: drawn.append(idx))
    monkeypatch.setattr(ProgressBar, "is_enabled", property(lambda self: True))
    monkeypatch.setattr(ProgressBar, "total_train_batches", property(lambda self: 50))
    bar = ProgressBar(redraws_per_second=2)
    bar.train_progress_bar_id = 0
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


def test_last_checkpoint_is_written_at_most_every_last_every_s(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("lab.callbacks.checkpoint.time.monotonic", clock)
    written = []
    monkeypatch.setattr(ModelCheckpoint, "_save_last_checkpoint", lambda self, tr, mc: written.append(tr.current_epoch))
    monkeypatch.setattr(ModelCheckpoint, "on_train_end", lambda self, tr, pl: self._save_last_checkpoint(tr, {}))
    monkeypatch.setattr(ModelCheckpoint, "on_exception", lambda self, tr, pl, exc: self._save_last_checkpoint(tr, {}))
    callback = Checkpoint(last_every_s=10)
    trainer = SimpleNamespace(should_stop=False, max_epochs=30, current_epoch=0)
    for epoch in range(30):  # 30 epochs of 3 s
        trainer.current_epoch = epoch
        callback._save_last_checkpoint(trainer, {})
        clock.now += 3.0
    assert written == [0, 4, 8, 12, 16, 20, 24, 28, 29]  # every >= 10 s, and the final epoch
    trainer.current_epoch = 5
    callback.on_exception(trainer, None, KeyboardInterrupt())  # Ctrl-C: written now, whatever the clock
    callback.on_train_end(trainer, None)
    assert written[-2:] == [5, 5]
    every_epoch = Checkpoint(last_every_s=0)
    written.clear()
    for epoch in range(3):
        trainer.current_epoch = epoch
        every_epoch._save_last_checkpoint(trainer, {})
    assert written == [0, 1, 2]
