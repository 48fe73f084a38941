"""Datamodules: digits split, the IDX reader on real-format fixture files, the batch loader."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from lab.data.digits import DigitsDataModule
from lab.data.idx import read_idx
from lab.data.loader import TensorBatchLoader
from lab.data.mnist import FILES, FashionMNISTDataModule, MNISTDataModule
from lab.errors import ConfigError, DataNotFoundError
from tests.fixtures import write_idx


def make_fake_mnist(folder: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(n_train, dtype=np.uint8) % 10,
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for key, array in arrays.items():
        write_idx(folder / f"{FILES[key]}.gz", array)
    return arrays


def test_digits_split_is_stratified_disjoint_and_fixed():
    dm = DigitsDataModule()
    dm.setup()
    sizes = dm.split_sizes()
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == 270 and sizes["val"] == 270
    assert dm.num_classes == 10 and dm.in_channels == 1 and dm.image_size == (8, 8)
    for split in ("train", "val", "test"):
        counts = torch.bincount(dm.splits[split][1], minlength=10).float()
        assert counts.min() / counts.max() > 0.9, f"{split} is not stratified: {counts}"
    flat = {s: {bytes(x.numpy()) + bytes([int(y)]) for x, y in zip(*dm.splits[s])} for s in dm.splits}
    assert len(flat["test"] & flat["train"]) < 5  # digits holds a handful of exact duplicates
    again = DigitsDataModule(seed=123)  # the training seed does not move the split
    again.setup()
    assert torch.equal(again.splits["test"][1], dm.splits["test"][1])
    other = DigitsDataModule(split_seed=1)
    other.setup()
    assert not torch.equal(other.splits["test"][0], dm.splits["test"][0])


def test_digits_rejects_bad_fractions():
    with pytest.raises(ConfigError, match="val_fraction"):
        DigitsDataModule(val_fraction=1.5)
    with pytest.raises(ConfigError, match="must be < 1"):
        DigitsDataModule(val_fraction=0.6, test_fraction=0.5)


def test_read_idx_roundtrip_and_bad_files(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(tmp_path / "bad")
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    (tmp_path / "short").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="header promises"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_fashion_mnist_reads_both_layouts(tmp_path, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "FashionMNIST" / "raw"
    arrays = make_fake_mnist(folder)
    dm = FashionMNISTDataModule(root=str(tmp_path), download=False, val_size=50, batch_size=32)
    dm.setup()
    sizes = dm.split_sizes()
    assert sizes == {"train": 250, "val": 50, "test": 100}
    assert dm.class_names[0] == "T-shirt/top" and dm.num_classes == 10
    assert torch.equal(dm.splits["test"][0][:, 0], torch.from_numpy(arrays["test_images"]))
    assert dm.in_channels == 1 and dm.image_size == (28, 28)


def test_val_split_is_deterministic_by_seed(tmp_path):
    make_fake_mnist(tmp_path)
    a = MNISTDataModule(root=str(tmp_path), download=False, val_size=50)
    b = MNISTDataModule(root=str(tmp_path), download=False, val_size=50)
    c = MNISTDataModule(root=str(tmp_path), download=False, val_size=50, split_seed=7)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.splits["val"][0], b.splits["val"][0])
    assert not torch.equal(a.splits["val"][0], c.splits["val"][0])
    assert torch.bincount(a.splits["val"][1]).tolist() == [5] * 10  # stratified


def test_missing_files_give_one_clear_error(tmp_path):
    dm = FashionMNISTDataModule(root=str(tmp_path / "empty"), download=False)
    with pytest.raises(DataNotFoundError) as info:
        dm.setup()
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "empty") in message
    assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_batch_loader_covers_every_sample_once_and_is_seeded():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).repeat(1, 1, 2, 2)
    labels = torch.arange(10)
    loader = TensorBatchLoader(images, labels, batch_size=4, shuffle=True, seed=3)
    assert len(loader) == 3
    first = torch.cat([y for _, y in loader])
    second = torch.cat([y for _, y in loader])
    assert sorted(first.tolist()) == list(range(10)) and sorted(second.tolist()) == list(range(10))
    assert first.tolist() != second.tolist()  # a new order each epoch
    replay = TensorBatchLoader(images, labels, batch_size=4, shuffle=True, seed=3)
    assert torch.cat([y for _, y in replay]).tolist() == first.tolist()
    x, y = next(iter(TensorBatchLoader(images, labels, batch_size=4)))
    assert x.dtype == torch.uint8 and torch.equal(x[:, 0, 0, 0], y.to(torch.uint8))  # images travel as uint8


def test_batch_loader_drops_a_lone_last_training_sample():
    images = torch.zeros(9, 1, 2, 2, dtype=torch.uint8)
    loader = TensorBatchLoader(images, torch.zeros(9, dtype=torch.long), batch_size=4, shuffle=True)
    assert [len(y) for _, y in loader] == [4, 4]
    evaluation = TensorBatchLoader(images, torch.zeros(9, dtype=torch.long), batch_size=4)
    assert [len(y) for _, y in evaluation] == [4, 4, 1]
