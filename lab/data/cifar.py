"""CIFAR-10 and CIFAR-100 from the official "python version" archives' pickles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lab.data.archive import find_or_fetch, torchvision_download
from lab.data.holdout import check_holdout, holdout_count
from lab.data.memory import InMemoryClassificationData
from lab.data.safe_pickle import load_pickle
from lab.data.splits import stratified_split
from lab.errors import ConfigError, DataNotFoundError


class _CifarDataModule(InMemoryClassificationData):
    """Reads <root>/<folder>/ (as torchvision's download extracts it) or <root> itself.

    When files are missing and `download` is true, torchvision downloads the official
    tar.gz, checks its MD5 and extracts it. val is carved from train (stratified, by
    `split_seed`); test is the official test batch.
    """

    # What load() reads: a sweep's jobs with equal values share one load (load_cache.cached_load).
    load_settings = ("root", "download", "split_seed", "val_size", "label_type")

    folder = ""
    train_files: tuple[str, ...] = ()
    test_file = ""
    meta_file = ""
    torchvision_class = ""
    url = ""

    def __init__(self, name: str, root: str = "data", download: bool = True, val_size: int | float = 5000,
                 split_seed: int = 0, **common) -> None:
        common.setdefault("augment", {"crop_padding": 4, "hflip": True})
        super().__init__(**common)
        self.name = name
        self.root = Path(root).expanduser()
        self.download = download
        self.val_size = check_holdout("data.val_size", val_size)  # a count or a fraction
        self.split_seed = int(split_seed)

    def _files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file, self.meta_file)

    def find_dir(self) -> Path | None:
        for folder in (self.root / self.folder, self.root):
            if all((folder / f).is_file() for f in self._files()):
                return folder
        return None

    def _locate(self) -> Path:
        # torchvision's archive holds both splits: one call fetches everything.
        folder, reason = find_or_fetch(
            self.find_dir, lambda: torchvision_download(self.torchvision_class, self.root, (True,)), self.download
        )
        if folder is None:
            raise DataNotFoundError(
                f"{self.name}: files not found in {(self.root / self.folder).absolute()} or {self.root.absolute()} "
                f"(expected {', '.join(self._files())}); download failed ({reason}). "
                f"Offline fix: download {self.url} and extract it into {self.root.absolute()}."
            )
        return folder

    @staticmethod
    def _images(batch: dict) -> np.ndarray:
        data = np.asarray(batch["data"], dtype=np.uint8)
        return data.reshape(-1, 3, 32, 32)

    def _split(self, images: np.ndarray, labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray):
        held_out = holdout_count("data.val_size", self.val_size, labels, "training images")
        keep, held = stratified_split(labels, held_out, self.split_seed)

        def part(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))

        return {"train": part(images[keep], labels[keep]), "val": part(images[held], labels[held]),
                "test": part(test_images, test_labels)}


class CIFAR10DataModule(_CifarDataModule):
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_file = "test_batch"
    meta_file = "batches.meta"
    torchvision_class = "CIFAR10"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    # Patrini et al. (2017): truck->automobile, bird->airplane, deer->horse, cat<->dog.
    noise_pairs = {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}

    def __init__(self, name: str = "cifar10", **kwargs) -> None:
        super().__init__(name=name, **kwargs)

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        folder = self._locate()
        batches = [load_pickle(folder / f) for f in self.train_files]
        test = load_pickle(folder / self.test_file)
        names = load_pickle(folder / self.meta_file).get("label_names")
        if names:
            self.class_names = [str(n) for n in names]
        images = np.concatenate([self._images(b) for b in batches])
        labels = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
        return self._split(images, labels, self._images(test), np.asarray(test["labels"], dtype=np.int64))


class CIFAR100DataModule(_CifarDataModule):
    """`label_type: fine` (100 classes) or `coarse` (the dataset's 20 superclasses)."""

    folder = "cifar-100-python"
    train_files = ("train",)
    test_file = "test"
    meta_file = "meta"
    torchvision_class = "CIFAR100"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"

    def __init__(self, name: str = "cifar100", label_type: str = "fine", **kwargs) -> None:
        if label_type not in ("fine", "coarse"):
            raise ConfigError(f"data.label_type must be 'fine' or 'coarse', got {label_type!r}")
        super().__init__(name=name, **kwargs)
        self.label_type = label_type
        self.class_names = []

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        folder = self._locate()
        train, test = load_pickle(folder / "train"), load_pickle(folder / "test")
        meta = load_pickle(folder / "meta")
        key = f"{self.label_type}_labels"
        self.class_names = [str(n) for n in meta[f"{self.label_type}_label_names"]]
        labels = np.asarray(train[key], dtype=np.int64)
        if self.label_type == "fine":
            # Asymmetric noise for CIFAR-100: each class to the next one of its superclass.
            fine, coarse = labels, np.asarray(train["coarse_labels"], dtype=np.int64)
            pairs = {}
            for group in np.unique(coarse):
                members = sorted(set(fine[coarse == group].tolist()))
                for i, cls in enumerate(members):
                    pairs[self.class_names[cls]] = self.class_names[members[(i + 1) % len(members)]]
            self.noise_pairs = pairs if all(len(set(fine[coarse == g])) > 1 for g in np.unique(coarse)) else None
        return self._split(self._images(train), labels, self._images(test), np.asarray(test[key], dtype=np.int64))
