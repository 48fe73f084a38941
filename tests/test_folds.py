"""K-fold cross-validation: `data.folds=K data.fold=i` on every in-memory and image-folder dataset, the
one-line errors for what cannot work, `sweep=folds`, and lab.report's mean ± std over the folds.

The folds are drawn after load() from train ∪ val (lab.data.memory), so each dataset is checked as the
partition of that pool: K disjoint folds whose union is the pool, class counts within 1 of each other,
fixed by data.split_seed, test untouched, and folds=0/null exactly the split lab made before.
"""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from lab.data.digits import DigitsDataModule
from lab.data.splits import stratified_folds, stratified_split
from lab.errors import ConfigError
from tests.conftest import ROOT, run_cli
from tests.fixtures import make_cifar10, make_image_folder, make_tiny_imagenet
from tests.test_data import make_fake_mnist
from tests.test_report import METRICS, make_sweep


def samples(split: tuple[torch.Tensor, torch.Tensor]) -> Counter:
    """A split as a multiset of (image bytes, label): digits holds a few exact duplicates."""
    images, labels = split
    return Counter(bytes(x.numpy()) + int(y).to_bytes(2, "little") for x, y in zip(images, labels))


def loaded(factory, **kwargs):
    dm = factory(**kwargs)
    dm.setup()
    return dm


def check_partition(factory, folds: int, **kwargs) -> list:
    """Every fold of `factory(**kwargs)`: a partition of the usual train ∪ val, stratified, test untouched."""
    usual = loaded(factory, **kwargs)
    pool = samples(usual.splits["train"]) + samples(usual.splits["val"])
    runs = [loaded(factory, folds=folds, fold=i, **kwargs) for i in range(folds)]
    vals = [samples(dm.splits["val"]) for dm in runs]
    assert sum(vals, Counter()) == pool  # the folds' union is the pool; with the sizes below, disjoint
    assert sum(sum(v.values()) for v in vals) == sum(pool.values())
    for dm, val in zip(runs, vals):
        assert samples(dm.splits["train"]) + val == pool  # train is the other K-1 folds
        assert torch.equal(dm.splits["test"][0], usual.splits["test"][0])  # never folded
        assert torch.equal(dm.splits["test"][1], usual.splits["test"][1])
    counts = np.stack([torch.bincount(dm.splits["val"][1], minlength=usual.num_classes).numpy() for dm in runs])
    assert (counts.max(axis=0) - counts.min(axis=0)).max() <= 1, counts  # per class, within 1 across folds
    sizes = counts.sum(axis=1)
    assert sizes.max() - sizes.min() <= 1
    return runs


# --- the partition, on every dataset ---------------------------------------------------

def test_digits_five_folds_partition_train_and_val():
    runs = check_partition(DigitsDataModule, 5)
    assert [len(dm.splits["val"][1]) for dm in runs] == [306, 306, 305, 305, 305]  # 1,527 = 1,797 - 270 test


def test_image_folder_folds_pool_the_train_and_val_folders(tmp_path):
    from lab.data.imagefolder import ImageFolderDataModule

    root = make_image_folder(tmp_path / "images", splits=("train", "val", "test"), per_class=6)
    runs = check_partition(ImageFolderDataModule, 3, root=str(root), image_size=16)
    assert [len(dm.splits["val"][1]) for dm in runs] == [12, 12, 12]  # 3 classes x (6 train + 6 val) / 3


def test_image_folder_without_val_folder_folds_train(tmp_path, capsys):
    from lab.data.imagefolder import ImageFolderDataModule

    root = make_image_folder(tmp_path / "images", splits=("train", "test"), per_class=8)
    check_partition(ImageFolderDataModule, 4, root=str(root), image_size=16)
    capsys.readouterr()
    # The folds depend on the pool and the split seed, not on the val_size hold-out they replace.
    a = loaded(ImageFolderDataModule, root=str(root), image_size=16, folds=4, fold=1, val_size=0.1)
    b = loaded(ImageFolderDataModule, root=str(root), image_size=16, folds=4, fold=1, val_size=0.5)
    for split in ("train", "val"):
        assert all(torch.equal(x, y) for x, y in zip(a.splits[split], b.splits[split]))
    out = capsys.readouterr().out
    assert "no val/ folder" not in out and "note: data.folds=4: val is fold 1 (6 of the 24 train+val" in out
    assert "data.val_size" not in out.split("note: data.folds")[0]  # no note on the hold-out folds replace


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "tinyimagenet"])
def test_every_in_memory_dataset_folds(dataset, tmp_path):
    if dataset == "mnist":
        from lab.data.mnist import MNISTDataModule as factory

        make_fake_mnist(tmp_path, n_train=100, n_test=20)
        kwargs, folds = {"val_size": 20}, 5
    elif dataset == "cifar10":
        from lab.data.cifar import CIFAR10DataModule as factory

        make_cifar10(tmp_path, per_batch=10, n_test=10)
        kwargs, folds = {"val_size": 10}, 5
    else:
        from lab.data.tinyimagenet import TinyImageNetDataModule as factory

        make_tiny_imagenet(tmp_path)
        kwargs, folds = {"val_size": 6}, 3
    check_partition(factory, folds, root=str(tmp_path), download=False, **kwargs)


# --- fixed by the split seed, and the usual split unchanged ------------------------------

def test_same_split_seed_same_folds_another_seed_other_folds(tmp_path):
    from lab.data.imagefolder import ImageFolderDataModule

    root = make_image_folder(tmp_path / "images", splits=("train", "val", "test"), per_class=6)
    common = {"root": str(root), "image_size": 16, "folds": 3, "fold": 0}
    a, b = loaded(ImageFolderDataModule, **common), loaded(ImageFolderDataModule, seed=7, **common)
    assert torch.equal(a.splits["val"][0], b.splits["val"][0])  # the training seed does not move the folds
    other = loaded(ImageFolderDataModule, split_seed=1, **common)
    assert samples(other.splits["val"]) != samples(a.splits["val"])
    assert torch.equal(other.splits["test"][0], a.splits["test"][0])
    assert DigitsDataModule(folds=5).folds == 5 and DigitsDataModule(folds=5).fold == 0  # fold defaults to 0
    d1, d2 = (loaded(DigitsDataModule, folds=5, fold=2) for _ in range(2))
    assert torch.equal(d1.splits["val"][0], d2.splits["val"][0]) and torch.equal(d1.splits["train"][1],
                                                                                  d2.splits["train"][1])


def test_stratified_folds_are_a_seeded_round_robin_per_class():
    labels = np.repeat(np.arange(4), [7, 5, 9, 3])
    first, again = stratified_folds(labels, 3, seed=0), stratified_folds(labels, 3, seed=0)
    assert np.array_equal(first, again) and not np.array_equal(first, stratified_folds(labels, 3, seed=1))
    for cls in range(4):
        per_fold = np.bincount(first[labels == cls], minlength=3)
        assert per_fold.max() - per_fold.min() <= 1
    sizes = np.bincount(first, minlength=3)
    assert sizes.max() - sizes.min() <= 1  # each class starts where the previous one stopped


def test_folds_off_is_the_split_lab_made_before():
    """folds=0 and folds=null are the val_fraction split, drawn exactly as before k-fold existed."""
    from sklearn.datasets import load_digits

    labels = load_digits().target.astype(np.int64)
    rest, test = stratified_split(labels, 0.15, 0, part="test")
    train_pos, val_pos = stratified_split(labels[rest], 0.15 / 0.85, 0)
    for folds in (None, 0):
        dm = loaded(DigitsDataModule, folds=folds)
        assert torch.equal(dm.splits["train"][1], torch.from_numpy(labels[rest[train_pos]]))
        assert torch.equal(dm.splits["val"][1], torch.from_numpy(labels[rest[val_pos]]))
        assert torch.equal(dm.splits["test"][1], torch.from_numpy(labels[test]))
    usual = loaded(DigitsDataModule)
    assert all(torch.equal(x, y) for s in ("train", "val", "test") for x, y in zip(dm.splits[s], usual.splits[s]))


def test_label_noise_touches_the_folds_train_only():
    clean = loaded(DigitsDataModule, folds=5, fold=3)
    noisy = loaded(DigitsDataModule, folds=5, fold=3, noise_ratio=0.3)
    assert torch.equal(noisy.splits["val"][1], clean.splits["val"][1])
    assert torch.equal(noisy.clean_train_labels, clean.splits["train"][1])
    changed = int((noisy.splits["train"][1] != clean.splits["train"][1]).sum())
    assert changed == round(0.3 * len(clean.splits["train"][1]))


# --- what cannot work: one line naming the key -----------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"folds": 1}, r"data.folds=1: k-fold needs an integer number of folds >= 2"),
    ({"folds": -3}, r"data.folds=-3: k-fold needs an integer number of folds >= 2"),
    ({"folds": 2.5}, r"data.folds=2.5: k-fold needs an integer"),
    ({"folds": 5, "fold": 5}, r"data.fold=5 is outside 0..4 for data.folds=5"),
    ({"folds": 5, "fold": -1}, r"data.fold=-1 is outside 0..4 for data.folds=5"),
    ({"folds": 5, "fold": None}, r"data.fold=None is outside 0..4"),
    ({"fold": 2}, r"data.fold=2 needs data.folds=K .*data.folds=5 data.fold=2"),
    ({"folds": 5, "train_on": ["train", "val"]}, r"data.folds=5 with data.train_on=\[train, val\]"),
])
def test_bad_folds_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        DigitsDataModule(**kwargs)
    assert "\n" not in str(err.value)


def test_more_folds_than_the_smallest_class_is_one_line():
    with pytest.raises(ConfigError, match=r"data.folds=500: class '\d' has (\d+) of the 1527 train\+val samples, "
                                          r"too few for 500 stratified folds; use data.folds from 2 to \1") as err:
        loaded(DigitsDataModule, folds=500, fold=0)
    assert "\n" not in str(err.value)


def test_sweep_folds_runs_every_fold():
    from lab.config.paths import config_dir
    from lab.config.sweep_checks import check_sweep

    check_sweep(["-m", "sweep=folds"], config_dir(), build=False)
    check_sweep(["-m", "sweep=folds", "data.folds=3", "data.fold=range(0,3)"], config_dir(), build=False)
    with pytest.raises(ConfigError, match=r"sweep=folds runs data.fold=0,1,2,3,4 of data.folds=10, not every "
                                          r"fold: add data.fold=range\(0,10\)"):
        check_sweep(["-m", "sweep=folds", "data.folds=10"], config_dir(), build=False)


# --- lab.report: folds are replicates, as seeds are --------------------------------------

TOP1 = [0.91, 0.95, 0.93, 0.90, 0.96]


def fold_sweep(path: Path, lrs=("0.01",)) -> Path:
    jobs, num = {}, 0
    for lr in lrs:
        for fold, top1 in enumerate(TOP1):
            overrides = [f"optimizer.lr={lr}", "data.folds=5", f"data.fold={fold}"]
            jobs[num] = {"overrides": overrides, "metrics": {**METRICS, "val/top1": top1 - float(lr)}}
            num += 1
    command = [f"optimizer.lr={','.join(lrs)}", "data.folds=5", "data.fold=0,1,2,3,4"]
    return make_sweep(path, command, jobs)


def test_report_groups_the_folds_into_one_row_with_mean_std_and_n(tmp_path, capsys):
    from lab.results import build_table, group_table, load_sweep
    from lab.results.cli import main

    sweep = load_sweep(fold_sweep(tmp_path / "folds"))
    grouped = group_table(build_table(sweep))
    assert grouped is not None and grouped.params == [] and len(grouped.groups) == 1
    assert grouped.groups[0].stats("val/top1") == pytest.approx(
        (statistics.mean(TOP1) - 0.01, statistics.stdev(TOP1), 5))
    assert grouped.groups[0].replicates("data.fold") == ["0", "1", "2", "3", "4"]
    assert main([str(sweep.path)]) == 0
    out = capsys.readouterr().out
    assert "1 configuration × 5 runs (data.fold)" in out
    row = next(csv.DictReader((sweep.path / "table.csv").open()))
    assert row["n"] == "5" and row["folds"] == "0 1 2 3 4" and row["data.folds"] == "5"
    assert float(row["val/top1_std"]) == pytest.approx(statistics.stdev(TOP1))

    two = group_table(build_table(load_sweep(fold_sweep(tmp_path / "lrs", ("0.01", "0.02")))))
    assert [g.params for g in two.groups] == [{"optimizer.lr": "0.01"}, {"optimizer.lr": "0.02"}]
    assert [g.stats("val/top1")[2] for g in two.groups] == [5, 5]


@pytest.mark.slow
def test_a_five_fold_sweep_on_digits_reports_mean_and_std_over_the_folds(tmp_path):
    """The acceptance: `sweep=folds` on the real digits, then `lab.report`: one row, mean ± std, n=5."""
    out = tmp_path / "sweep"
    result = run_cli(["-m", "sweep=folds", "trainer.max_epochs=3", f"hydra.sweep.dir={out}"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for fold in range(5):
        assert f"note: data.folds=5: val is fold {fold} " in result.stdout
        assert (out / str(fold) / "metrics.json").is_file()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    report = subprocess.run([sys.executable, "-m", "lab.report", str(out)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "1 configuration × 5 runs (data.fold)" in report.stdout
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert len(rows) == 1 and rows[0]["n"] == "5" and rows[0]["folds"] == "0 1 2 3 4"
    assert float(rows[0]["val/top1"]) > 0.9 and float(rows[0]["val/top1_std"]) > 0
    table = (out / "table.md").read_text()
    assert "| 5 | 5 ok |" in table and " ± " in table
    print(table)
