"""The classification task's metrics and the learning-rate schedules."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from lab.errors import ConfigError
from lab.models.small_cnn import SmallCNN
from lab.tasks.classification import ClassificationTask
from lab.tasks.schedulers import warmup_cosine


def make_task(num_classes: int = 10, **kwargs) -> ClassificationTask:
    model = SmallCNN(in_channels=1, num_classes=num_classes, image_size=(8, 8), channels=[4])
    optimizer = partial(torch.optim.SGD, lr=0.1)
    return ClassificationTask(model=model, optimizer=optimizer, num_classes=num_classes, **kwargs)


def test_top1_top5_are_micro_averages_of_samples():
    task = make_task(num_classes=6)
    logits = torch.tensor([
        [9.0, 8, 7, 6, 5, 4],   # true 0: top-1 hit
        [9.0, 8, 7, 6, 5, 4],   # true 4: top-5 hit only
        [9.0, 8, 7, 6, 5, 4],   # true 5: miss both
        [0.0, 9, 0, 0, 0, 0],   # true 1: top-1 hit
    ])
    target = torch.tensor([0, 4, 5, 1])
    task.val_acc.update(logits, target)
    values = task.val_acc.compute()
    assert values["val/top1"].item() == pytest.approx(2 / 4)
    assert values["val/top5"].item() == pytest.approx(3 / 4)


@pytest.mark.parametrize("top_k", [1, 3, 5])
def test_top_k_accuracy_equals_torchmetrics_over_batches(top_k):
    from torchmetrics.classification import MulticlassAccuracy

    from lab.metrics.accuracy import TopKAccuracy

    gen = torch.Generator().manual_seed(top_k)
    ours = TopKAccuracy((1, top_k), prefix="val/")
    reference = {k: MulticlassAccuracy(7, top_k=k, average="micro") for k in {1, top_k}}
    for size in (13, 1, 40):
        logits, target = torch.randn(size, 7, generator=gen), torch.randint(0, 7, (size,), generator=gen)
        ours.update(logits, target)
        for metric in reference.values():
            metric.update(logits, target)
    values = ours.compute()
    assert sorted(values) == sorted(f"val/top{k}" for k in reference)
    for k, metric in reference.items():
        assert values[f"val/top{k}"].item() == pytest.approx(metric.compute().item(), abs=1e-7)
    ours.reset()
    assert ours.total.item() == 0


def test_top_k_at_or_above_the_classes_is_lowered_not_refused():
    """top-k with k >= the number of classes is always 1.0 (tests/test_own_data.py has the notes)."""
    assert make_task(num_classes=3).top_k == 2 and make_task(num_classes=2).top_k == 1
    assert make_task(num_classes=10).top_k == 5


def test_label_smoothing_reaches_the_loss():
    assert make_task(label_smoothing=0.1).criterion.label_smoothing == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="label_smoothing"):
        make_task(label_smoothing=1.0)


def test_scheduler_wiring_monitors_val_top1():
    sched = partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="max", factor=0.1, patience=2)
    config = make_task(scheduler=sched).configure_optimizers()
    assert config["lr_scheduler"]["monitor"] == "val/top1"
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert isinstance(make_task().configure_optimizers(), torch.optim.SGD)


def test_warmup_cosine_values():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, max_epochs=20, warmup_epochs=2, warmup_start_factor=0.1)
    lrs = []
    for _ in range(21):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[1] == pytest.approx(0.55)
    assert lrs[2] == pytest.approx(1.0)
    assert lrs[11] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[20] == pytest.approx(0.0, abs=1e-12)


def test_warmup_is_capped_at_a_tenth_of_the_run():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, max_epochs=1, warmup_epochs=2, steps_per_epoch=10)  # a 1-epoch run
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[1] == pytest.approx(1.0)  # warmup: 1 step of 10
    assert lrs[9] < 0.05  # and the run still decays


def test_small_cnn_shapes_and_bad_values():
    for size, pool in (((8, 8), "avg"), ((28, 28), "flatten"), ((32, 32), "avg")):
        model = SmallCNN(in_channels=3, num_classes=7, image_size=size, channels=[8, 16, 32], pool=pool)
        assert model(torch.zeros(2, 3, *size)).shape == (2, 7)
    with pytest.raises(ValueError, match="dropout"):
        SmallCNN(in_channels=1, num_classes=2, dropout=1.0)
    with pytest.raises(ValueError, match="norm"):
        SmallCNN(in_channels=1, num_classes=2, norm="layer")


def test_warmup_cosine_per_step_is_smooth():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, max_epochs=2, warmup_epochs=0, steps_per_epoch=10)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(0.5)  # half-way through the 2 epochs
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
