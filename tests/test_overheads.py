"""The framework's own costs stay off the per-step path: epoch means without per-step logging,
a progress bar redrawn a few times a second, last.ckpt at most every few seconds."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import lightning as L
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


def test_last_checkpoint_follows_training_at_most_every_last_every_s(monkeypatch):
    """Lightning writes last.ckpt only with a new best; lab also writes it every >= last_every_s
    seconds and after the final epoch, never twice for one step."""
    clock = Clock()
    monkeypatch.setattr("lab.callbacks.checkpoint.time.monotonic", clock)
    written = []
    best_epochs = {0, 1, 10}  # epochs with a new best: Lightning writes best and last itself
    saved_at = {}

    def lightning_validation_end(self, trainer, pl_module):
        if trainer.current_epoch in best_epochs:
            self._save_last_checkpoint(trainer, {})
            saved_at["step"] = trainer.global_step

    monkeypatch.setattr(ModelCheckpoint, "on_validation_end", lightning_validation_end)
    monkeypatch.setattr(ModelCheckpoint, "_save_last_checkpoint", lambda self, tr, mc: written.append(tr.current_epoch))
    monkeypatch.setattr(ModelCheckpoint, "_should_save_on_train_epoch_end", lambda self, tr: False)
    monkeypatch.setattr(ModelCheckpoint, "_should_skip_saving_checkpoint",
                        lambda self, tr: saved_at.get("step") == tr.global_step)
    monkeypatch.setattr(ModelCheckpoint, "_monitor_candidates", lambda self, tr: {})
    callback = Checkpoint(last_every_s=10, save_last=True)
    trainer = SimpleNamespace(should_stop=False, max_epochs=30, current_epoch=0, global_step=0)
    for epoch in range(30):  # 30 epochs of 3 s
        trainer.current_epoch, trainer.global_step = epoch, 100 * (epoch + 1)
        callback.on_validation_end(trainer, None)
        clock.now += 3.0
    # new bests at 0, 1, 10; otherwise every >= 10 s (4 epochs) since the last write; the final epoch
    assert written == [0, 1, 5, 9, 10, 14, 18, 22, 26, 29]
    with pytest.raises(ValueError, match="last_every_s"):
        Checkpoint(last_every_s=-1)


def test_a_sweeps_jobs_share_one_dataset_load(monkeypatch):
    """Jobs differing in seed, batch size or augmentation reuse the load; another split does not."""
    from lab.data import memory
    from lab.data.digits import DigitsDataModule

    calls = []
    real_load = DigitsDataModule.load
    monkeypatch.setattr(DigitsDataModule, "load", lambda self: calls.append(self.split_seed) or real_load(self))
    monkeypatch.setattr(memory, "_LOADED", {})
    first = DigitsDataModule(seed=0, batch_size=32)
    first.setup("fit")
    second = DigitsDataModule(seed=1, batch_size=64)
    second.setup("fit")
    assert calls == [0]
    assert torch.equal(first.splits["val"][1], second.splits["val"][1])
    DigitsDataModule(seed=0, split_seed=5).setup("fit")
    assert calls == [0, 5]


def test_the_trainer_profiles_through_one_shared_no_op_unless_a_profiler_is_asked_for(tmp_path):
    from lightning.pytorch.profilers import SimpleProfiler

    from lab.build import build_trainer
    from lab.profiler import NoProfiler
    from tests.conftest import compose

    trainer = build_trainer(compose(["trainer.max_epochs=1"], tmp_path / "a"))
    assert isinstance(trainer.profiler, NoProfiler)
    first, second = trainer.profiler.profile("a"), trainer.profiler.profile("b")
    assert first is second
    with first, second:  # nested, as Lightning nests hook calls
        pass
    trainer = build_trainer(compose(["trainer.max_epochs=1", "trainer.profiler=simple"], tmp_path / "b"))
    assert isinstance(trainer.profiler, SimpleProfiler)


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


def test_hook_names_skip_nn_module_attribute_checks_and_everything_else_does_not():
    task = ClassificationTask(model=SmallCNN(in_channels=1, num_classes=10, image_size=(8, 8), channels=[4]),
                              optimizer=partial(torch.optim.SGD, lr=0.1), num_classes=10)
    task._current_fx_name = "training_step"
    assert task._current_fx_name == "training_step" and "_current_fx_name" in task.__dict__
    task.extra = torch.nn.Linear(2, 2)  # still registered as a submodule
    assert "extra" in dict(task.named_children())


def test_without_a_gpu_torch_answers_is_cuda_there_from_its_cache(monkeypatch):
    import os

    from lab.build import cheap_cuda_probe_without_gpu

    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cheap_cuda_probe_without_gpu()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"  # a GPU: Lightning's fork-safe check stays
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    cheap_cuda_probe_without_gpu()
    assert "PYTORCH_NVML_BASED_CUDA_CHECK" not in os.environ


def test_top_k_accuracy_when_k_exceeds_the_classes_seen():
    from lab.metrics.accuracy import TopKAccuracy

    metric = TopKAccuracy((1, 5))
    metric.update(torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]]), torch.tensor([1, 2, 1]))
    values = metric.compute()
    assert values["top1"].item() == pytest.approx(1 / 3)
    assert values["top5"].item() == pytest.approx(1.0)  # every label is among 3 classes


class ScriptedScore(L.LightningModule):
    """Logs val `score` from a script, one value per epoch, to place the new bests."""

    def __init__(self, scores) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.scores = scores

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("score", float(self.scores[self.current_epoch]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_scripted(tmp_path, scores, save_last=True, **fit_args) -> L.Trainer:
    from torch.utils.data import DataLoader, TensorDataset

    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    callback = Checkpoint(dirpath=tmp_path, monitor="score", mode="max", save_top_k=1, save_last=save_last,
                          filename="best{epoch}")
    trainer = L.Trainer(max_epochs=len(scores), accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[callback],
                        default_root_dir=tmp_path)
    trainer.fit(ScriptedScore(scores), data, data, **fit_args)
    return trainer


@pytest.mark.parametrize("save_last", [True, "link"])
def test_last_checkpoint_copies_the_best_written_at_the_same_step(tmp_path, monkeypatch, save_last):
    """With a new best, last.ckpt is a copy of the file just written (one torch.save, not two), once
    last.ckpt was written the ordinary way: a real file holding the same state, and a run resumed
    from it goes on writing last.ckpt (not last-v1.ckpt); save_last="link" keeps Lightning's symlink."""
    saves = []
    real_save = L.Trainer.save_checkpoint
    monkeypatch.setattr(L.Trainer, "save_checkpoint", lambda self, path, *a, **k: saves.append(
        Path(path).name) or real_save(self, path, *a, **k))
    fit_scripted(tmp_path, [0.1, 0.3, 0.2, 0.5], save_last)  # new bests in epochs 0, 1 and 3
    last, best = tmp_path / "last.ckpt", tmp_path / "bestepoch=3.ckpt"
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["bestepoch=3.ckpt", "last.ckpt"]
    assert last.is_symlink() == (save_last == "link")
    if save_last == "link":
        return
    assert saves == ["bestepoch=0.ckpt", "last.ckpt", "bestepoch=1.ckpt", "bestepoch=3.ckpt"]
    assert not any(tmp_path.glob("*.partial"))
    ours, theirs = torch.load(last, weights_only=False), torch.load(best, weights_only=False)
    assert ours["global_step"] == theirs["global_step"] == 8 and ours["epoch"] == 3
    assert all(torch.equal(ours["state_dict"][k], v) for k, v in theirs["state_dict"].items())
    saves.clear()
    fit_scripted(tmp_path, [0.1, 0.3, 0.2, 0.5, 0.6, 0.7], ckpt_path=str(last))  # resumed: bests in 4 and 5
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["bestepoch=5.ckpt", "last.ckpt"]
    assert saves == ["bestepoch=4.ckpt", "bestepoch=5.ckpt"]
    assert torch.load(last, weights_only=False)["epoch"] == 5
