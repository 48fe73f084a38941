"""Metric updates held per step and made in batches give the per-step updates' values."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lab.metrics.accuracy import TopKAccuracy
from lab.metrics.epoch_mean import EpochMean
from lab.metrics.pending import PendingUpdates
from lab.models.small_cnn import SmallCNN
from lab.tasks.classification import ClassificationTask


def batches(sizes, classes=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, classes, generator=gen), torch.randint(0, classes, (n,), generator=gen)) for n in sizes]


class Recorder:
    """Stands in for a metric: records each update's arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def update(self, *args) -> None:
        self.calls.append(args)


def test_batched_top_k_accuracy_equals_per_step_updates():
    per_step, batched = TopKAccuracy((1, 3)), TopKAccuracy((1, 3))
    pending = PendingUpdates(batched, max_steps=4)
    for logits, target in batches([5, 3, 8, 1, 6, 2, 7]):  # uneven, and 7 is not a multiple of 4
        per_step.update(logits, target)
        pending.add(logits, target)
    assert len(pending) == 3  # one batch of 4 was made
    pending.flush()
    assert len(pending) == 0
    assert batched.total.item() == per_step.total.item() == 32
    assert torch.equal(batched.hits, per_step.hits)


def test_batched_epoch_mean_weighs_each_step_by_its_samples():
    per_step, batched = EpochMean(), EpochMean()
    pending = PendingUpdates(batched)
    for value, weight in [(1.0, 30), (4.0, 10), (2.5, 3)]:
        per_step.update(torch.tensor(value), weight)
        pending.add(torch.tensor(value), weight)
    assert not batched.update_called  # held
    pending.flush()
    assert batched.compute().item() == pytest.approx(per_step.compute().item(), rel=1e-6)
    assert batched.compute().item() == pytest.approx((30 + 40 + 7.5) / 43)
    assert batched.weight.item() == 43


def test_epoch_mean_takes_per_element_and_broadcast_weights():
    metric = EpochMean()
    metric.update(torch.tensor([1.0, 3.0]), torch.tensor([3, 1]))
    assert metric.compute().item() == pytest.approx(1.5)
    metric.reset()
    metric.update(torch.tensor([1.0, 3.0]), torch.tensor(2))  # one weight for every element
    assert metric.weight.item() == 4 and metric.compute().item() == pytest.approx(2.0)


def test_updates_are_made_at_max_steps_at_max_elements_and_as_given_for_one_step():
    recorder = Recorder()
    pending = PendingUpdates(recorder, max_steps=3, max_elements=1000)
    for i in range(7):
        pending.add(torch.full((2,), float(i)), i)
    assert [len(args[0]) for args in recorder.calls] == [6, 6]  # two batches of 3 steps
    assert torch.equal(recorder.calls[1][1], torch.tensor([3, 4, 5]))  # numbers: one per step
    pending.flush()
    assert recorder.calls[-1][1] == 6 and torch.equal(recorder.calls[-1][0], torch.full((2,), 6.0))  # untouched
    recorder.calls.clear()
    by_size = PendingUpdates(recorder, max_steps=100, max_elements=10)
    for _ in range(5):
        by_size.add(torch.zeros(4, 1))
    assert [len(args[0]) for args in recorder.calls] == [12]  # 3 steps reach 10 elements
    assert len(by_size) == 2
    with pytest.raises(ValueError, match="max_steps"):
        PendingUpdates(recorder, max_steps=0)


def test_a_fit_logs_the_epoch_metrics_of_the_logits_it_saw(tmp_path):
    """70 train batches (a batch of 64 steps is made mid-epoch) and 3 val batches (held to the
    epoch's end): the logged means and accuracies are those of every step's own logits."""
    torch.manual_seed(0)
    images, labels = torch.randn(140, 1, 8, 8), torch.randint(0, 10, (140,))
    val_images, val_labels = torch.randn(12, 1, 8, 8), torch.randint(0, 10, (12,))
    model = SmallCNN(in_channels=1, num_classes=10, image_size=(8, 8), channels=[4])
    seen = {True: [], False: []}  # training -> logits of each step
    model.register_forward_hook(lambda module, args, out: seen[module.training].append(out.detach().clone()))
    task = ClassificationTask(model=model, optimizer=partial(torch.optim.SGD, lr=0.1), num_classes=10, top_k=3)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=tmp_path)
    trainer.fit(task, DataLoader(TensorDataset(images, labels), batch_size=2),
                DataLoader(TensorDataset(val_images, val_labels), batch_size=5))
    logged = trainer.callback_metrics
    for split, logits, target in (("train", torch.cat(seen[True]), labels),
                                  ("val", torch.cat(seen[False]), val_labels)):
        top3 = logits.topk(3, dim=1).indices
        assert logged[f"{split}/top1"].item() == pytest.approx((logits.argmax(1) == target).float().mean().item())
        assert logged[f"{split}/top3"].item() == pytest.approx((top3 == target[:, None]).any(1).float().mean().item())
        loss = torch.nn.functional.cross_entropy(logits, target)
        assert logged[f"{split}/loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    assert logged["val/top1_best"].item() == logged["val/top1"].item()  # the best so far reads the whole epoch
    assert all(len(pending) == 0 for pending in task._pending.values())


def test_a_loss_changed_in_place_by_a_hook_is_logged_as_the_step_computed_it(tmp_path):
    """The task holds a copy of each step's loss: on_before_backward gets the loss tensor itself
    (in lab's lean step, as lab's trainers run it)."""
    from lab import lean_loop
    from lab.profiler import NoProfiler

    lean_loop.install()

    class Zeroes(L.Callback):
        def on_before_backward(self, trainer, pl_module, loss):
            with torch.no_grad():
                loss.mul_(0.0)

    torch.manual_seed(0)
    images, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    model = SmallCNN(in_channels=1, num_classes=10, image_size=(8, 8), channels=[4])
    seen: list = []
    model.register_forward_hook(lambda module, args, out: seen.append(out.detach().clone()))
    task = ClassificationTask(model=model, optimizer=partial(torch.optim.SGD, lr=0.1), num_classes=10)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Zeroes()],
                        profiler=NoProfiler(), default_root_dir=tmp_path)
    trainer.fit(task, DataLoader(TensorDataset(images, labels), batch_size=4))
    expected = torch.nn.functional.cross_entropy(torch.cat(seen), labels)
    assert expected.item() > 0
    assert trainer.callback_metrics["train/loss"].item() == pytest.approx(expected.item(), rel=1e-5)
