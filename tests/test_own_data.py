"""Defaults that work on a user's own data: a folder of 2 or 3 classes, a small or partial copy of a
dataset, a class subset of Tiny ImageNet, a hold-out given as a fraction, and checkpoint names
that read as what they are. Fixtures are written in the real on-disk formats."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from lab.data.holdout import check_holdout, holdout_count
from lab.data.imagefolder import ImageFolderDataModule
from lab.data.tinyimagenet import TinyImageNetDataModule
from lab.errors import ConfigError
from lab.metrics.top_k import reported_top_k
from tests.conftest import QUICK, compose, run_in_process
from tests.fixtures import make_image_folder, make_tiny_imagenet

# --- top-k fitted to the number of classes ----------------------------------------------------


def test_top_k_is_lowered_below_the_classes_or_dropped_with_one_note(capsys):
    assert reported_top_k(5, 10) == 5 and reported_top_k(5, 6) == 5
    assert capsys.readouterr().out == ""  # nothing to say when top-k means something
    assert reported_top_k(5, 4) == 3
    assert reported_top_k(5, 3) == 2
    assert reported_top_k(3, 3) == 2  # k == classes: also always 1.0
    notes = capsys.readouterr().out.splitlines()
    assert notes == [
        "note: task.top_k=5 lowered to 3 (with 4 classes, top-5 accuracy is always 1.0); logging top1 and top3",
        "note: task.top_k=5 lowered to 2 (with 3 classes, top-5 accuracy is always 1.0); logging top1 and top2",
        "note: task.top_k=3 lowered to 2 (with 3 classes, top-3 accuracy is always 1.0); logging top1 and top2",
    ]
    assert reported_top_k(5, 2) is None
    assert capsys.readouterr().out.strip() == (
        "note: task.top_k=5 dropped (with 2 classes, top-5 accuracy is always 1.0, and so is any top-k above "
        "top-1); logging top1 only")
    assert reported_top_k(1, 10) is None
    with pytest.raises(ConfigError, match=r"task.top_k must be an integer >= 1, got 2.5"):
        reported_top_k(2.5, 10)


@pytest.mark.parametrize("num_classes,keys", [(10, ["val/top1", "val/top5"]), (3, ["val/top1", "val/top2"]),
                                              (2, ["val/top1"])])
def test_the_task_logs_top1_and_the_top_k_that_means_something(num_classes, keys):
    from lab.models.small_cnn import SmallCNN
    from lab.tasks.classification import ClassificationTask

    model = SmallCNN(in_channels=1, num_classes=num_classes, image_size=(8, 8), channels=[4])
    task = ClassificationTask(model=model, optimizer=partial(torch.optim.SGD, lr=0.1), num_classes=num_classes)
    logits = torch.eye(num_classes)[[0, 1, 1, 0]]
    task.val_acc.update(logits, torch.tensor([0, 1, 0, 1]))
    values = task.val_acc.compute()
    assert sorted(values) == keys
    assert values["val/top1"].item() == pytest.approx(0.5)


# --- an image folder of 2 or 3 classes trains with the default config ------------------------


def test_a_three_class_folder_trains_with_the_default_config(tmp_path, capsys):
    root = make_image_folder(tmp_path / "pictures", splits=("train", "val", "test"), per_class=6)
    run = tmp_path / "run"
    metrics = run_in_process(["data=imagefolder", f"data.root={root}", *QUICK], run)
    assert "note: task.top_k=5 lowered to 2 (with 3 classes" in capsys.readouterr().out
    saved = json.loads((run / "metrics.json").read_text())
    assert {"val/top1", "val/top2", "test/top1", "test/top2"} <= set(saved)
    assert not [k for k in saved if k.endswith("/top5")]
    assert 0.0 <= metrics["test/top1"] <= metrics["test/top2"] <= 1.0
    best = [p.name for p in (run / "checkpoints").glob("epoch*.ckpt")]
    assert len(best) == 1 and best[0].startswith(f"epoch{saved['best_epoch']:03d}-val_top1="), best


def test_a_two_class_folder_with_no_val_folder_and_few_images_trains_with_the_default_config(tmp_path, capsys):
    """2 classes of 4 training images each, no val/ folder, a batch size (32) above the data: top-1 only,
    val held out of train with a note, and the run finishes."""
    root = make_image_folder(tmp_path / "pictures", splits=("train", "test"), per_class=4, classes=("cat", "dog"))
    run = tmp_path / "run"
    run_in_process(["data=imagefolder", f"data.root={root}", "trainer.max_epochs=2"], run)
    out = capsys.readouterr().out
    assert "note: task.top_k=5 dropped (with 2 classes" in out
    assert "note: data.val_size=0.1 of 8 training images is 1, fewer than one per class; holding out 2" in out
    assert "note: imagefolder: no val/ folder in" in out
    saved = json.loads((run / "metrics.json").read_text())
    assert "test/top1" in saved and "val/top1_best" in saved
    assert not [k for k in saved if re.search(r"/top([2-9]|\d\d)", k)], saved


def test_an_image_folder_without_val_holds_out_a_fraction_or_a_count(tmp_path):
    root = make_image_folder(tmp_path, splits=("train", "test"), per_class=10)
    fraction = ImageFolderDataModule(root=str(root), image_size=16, val_size=0.2)
    fraction.setup()
    assert fraction.split_sizes() == {"train": 24, "val": 6, "test": 30}
    assert torch.bincount(fraction.splits["val"][1]).tolist() == [2, 2, 2]  # stratified
    count = ImageFolderDataModule(root=str(root), image_size=16, val_size=9)
    count.setup()
    assert count.split_sizes() == {"train": 21, "val": 9, "test": 30}
    with pytest.raises(ConfigError, match=r"data.val_size=40 does not fit 30 training images of 3 classes: "
                                          r"use a count from 3 to 27, or a fraction such as 0.1"):
        ImageFolderDataModule(root=str(root), image_size=16, val_size=40).setup()


# --- hold-out sizes: a count or a fraction ----------------------------------------------------


def test_a_hold_out_is_a_count_or_a_fraction_and_a_bad_one_names_the_key():
    assert check_holdout("data.val_size", 0.1) == 0.1 and check_holdout("data.val_size", 5000) == 5000
    assert isinstance(check_holdout("data.val_size", 10000.0), int)
    for bad in (0, -3, 1.5, 0.0, True, "ten", None):
        with pytest.raises(ConfigError, match=r"data.val_size must be a number of samples \(an integer >= 1\) "
                                              r"or a fraction in \(0, 1\) such as 0.1, got "):
            check_holdout("data.val_size", bad)
    labels = np.repeat(np.arange(200), 500)  # Tiny ImageNet's train split
    assert holdout_count("data.val_size", 0.1, labels) == 10000  # the old fixed size, as a fraction
    assert holdout_count("data.val_size", 0.1, labels[:5000]) == 500  # a 10-class subset
    with pytest.raises(ConfigError, match=r"class 2 has 1 of the 5 training samples; a stratified hold-out "
                                          r"needs at least 2 of every class"):
        holdout_count("data.val_size", 0.5, np.array([0, 0, 1, 1, 2]))


@pytest.mark.parametrize("data", ["tinyimagenet", "imagefolder", "mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_the_config_check_refuses_a_bad_hold_out_in_one_line(data, tmp_path):
    from lab.config.checks import check_config

    check_config(compose([f"data={data}", "data.val_size=0.25"], tmp_path))
    with pytest.raises(ConfigError, match=r"^data.val_size must be .* got 1.5$"):
        check_config(compose([f"data={data}", "data.val_size=1.5"], tmp_path))


def test_mnist_and_cifar_accept_a_fraction(tmp_path):
    from lab.data.cifar import CIFAR10DataModule
    from tests.fixtures import make_cifar10

    make_cifar10(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, val_size=0.1)
    dm.setup()
    assert dm.split_sizes() == {"train": 180, "val": 20, "test": 40}


# --- Tiny ImageNet: the default hold-out fits any copy; a class subset trains -----------------


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    make_tiny_imagenet(root, per_class=20, val_per_class=4)
    return root


def test_tiny_imagenet_default_hold_out_is_a_tenth_of_train(tiny_root):
    dm = TinyImageNetDataModule(root=str(tiny_root), download=False)
    dm.setup()
    assert dm.split_sizes() == {"train": 54, "val": 6, "test": 12}  # 10% of 60, as 10,000 of 100,000


def test_tiny_imagenet_keeps_a_class_subset_by_name_wnid_index_or_count(tiny_root):
    by_name = TinyImageNetDataModule(root=str(tiny_root), download=False, classes=["bullfrog", "n01443537"])
    by_name.setup()
    assert by_name.class_names == ["bullfrog", "goldfish"] and by_name.wnids == ["n01641577", "n01443537"]
    assert by_name.split_sizes() == {"train": 36, "val": 4, "test": 8}
    images, labels = by_name.splits["test"]
    red_green_blue = images.float().mean(dim=(2, 3)).argmax(dim=1)  # the fixture's colour of classes 0, 1, 2
    assert torch.equal(red_green_blue, torch.tensor([2, 0])[labels])  # relabelled 0..K-1 in the order given
    first = TinyImageNetDataModule(root=str(tiny_root), download=False, classes=2)
    first.setup()
    assert first.class_names == ["goldfish", "European fire salamander"]
    by_index = TinyImageNetDataModule(root=str(tiny_root), download=False, classes=[2])
    by_index.setup()
    assert by_index.class_names == ["bullfrog"]
    with pytest.raises(ConfigError, match=r"data.classes: unknown class 'toad'; classes are n01443537, "):
        TinyImageNetDataModule(root=str(tiny_root), download=False, classes=["toad"]).setup()


def test_a_tiny_imagenet_class_subset_trains_with_the_default_config(tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    metrics = run_in_process(["data=tinyimagenet", f"data.root={tiny_root}", "data.download=false",
                              "data.classes=[goldfish,bullfrog]", *QUICK], run)
    assert "note: task.top_k=5 dropped (with 2 classes" in capsys.readouterr().out
    assert (run / "confusion_test.csv").read_text().splitlines()[0].endswith("goldfish,bullfrog")
    assert "test/top1" in metrics and not [k for k in metrics if k.endswith("/top5")]


# --- checkpoint names ------------------------------------------------------------------------


@pytest.mark.parametrize("metric,value,name", [
    ("val/top1", 0.99261, "epoch005-val_top1=0.9926.ckpt"),
    ("val/top1", 1.0, "epoch005-val_top1=1.000.ckpt"),
    ("val/loss", 0.059141, "epoch005-val_loss=0.05914.ckpt"),
])
def test_checkpoint_names_spell_the_metric_and_its_value(metric, value, name, tmp_path):
    from hydra.utils import instantiate

    cfg = compose([f"task.objective.metric={metric}"], tmp_path)
    callback = instantiate(cfg.callbacks.model_checkpoint)
    assert callback.format_checkpoint_name({"epoch": torch.tensor(5), metric: torch.tensor(value)}).endswith(
        "/" + name)


def test_init_from_a_checkpoint_whose_name_holds_an_equals_sign_reaches_hydra_verbatim():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lab.config.overrides import quote_verbatim

    path = "outputs/runs/x/checkpoints/epoch005-val_top1=0.9926.ckpt"
    argv = quote_verbatim([f"init_from={path}", "init_from=a.ckpt,b.ckpt", "optimizer.lr=0.1"])
    parser = OverridesParser.create()
    assert parser.parse_override(argv[0]).value() == path
    assert argv[1:] == ["init_from=a.ckpt,b.ckpt", "optimizer.lr=0.1"]  # a sweep still sweeps


# --- the report ------------------------------------------------------------------------------


def test_the_report_shows_whichever_top_k_the_runs_logged(tmp_path):
    from lab.results import build_table, load_sweep
    from tests.test_report import make_sweep

    three = {"val/loss": 0.5, "val/top1": 0.8, "val/top2": 0.95, "test/loss": 0.6, "test/top1": 0.7,
             "test/top2": 0.9, "best_epoch": 1}
    two = {k: v for k, v in three.items() if not k.endswith("top2")}
    sweep = make_sweep(tmp_path / "sweep", ["data.classes=3,2"], {
        0: {"overrides": ["data.classes=3"], "metrics": three}, 1: {"overrides": ["data.classes=2"], "metrics": two}})
    table = build_table(load_sweep(sweep))
    assert table.metrics == ["val/loss", "val/top1", "val/top2", "test/loss", "test/top1", "test/top2", "best_epoch"]
    assert "| 1 | 2 | 0.5000 | 0.8000 |  | 0.6000 | 0.7000 |  | 1 |" in table.to_markdown()
