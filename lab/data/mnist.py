"""MNIST and Fashion-MNIST from their four IDX .gz files, in torchvision's format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lab.data.archive import find_or_fetch, torchvision_download
from lab.data.holdout import check_holdout, holdout_count
from lab.data.idx import read_idx
from lab.data.memory import InMemoryClassificationData
from lab.data.splits import stratified_split
from lab.errors import DataNotFoundError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class _IdxDataModule(InMemoryClassificationData):
    """Reads the IDX files from `root` or `root/<torchvision folder>/raw`.

    When they are missing and `download` is true, torchvision downloads (and
    checksums) them into `root/<torchvision folder>/raw`. With no files and no
    network, raises DataNotFoundError naming the folder, the files and the fix.
    """

    # What load() reads: a sweep's jobs with equal values share one load (load_cache.cached_load).
    load_settings = ("root", "download", "split_seed", "val_size")

    torchvision_folder = ""  # e.g. "FashionMNIST": torchvision keeps files in <root>/<folder>/raw
    how_to_get = ""

    def __init__(
        self,
        name: str,
        root: str = "data",
        download: bool = True,
        val_size: int | float = 5000,
        split_seed: int = 0,
        **common,
    ) -> None:
        super().__init__(**common)
        self.name = name
        self.root = Path(root).expanduser()
        self.download = download
        self.val_size = check_holdout("data.val_size", val_size)  # a count or a fraction
        self.split_seed = int(split_seed)

    def candidate_dirs(self) -> list[Path]:
        return [self.root, self.root / self.torchvision_folder / "raw"]

    def find_files(self) -> dict[str, Path] | None:
        """The four files, from the first folder that holds all of them (.gz or raw)."""
        for folder in self.candidate_dirs():
            found = {}
            for key, stem in FILES.items():
                for name in (stem + ".gz", stem):
                    if (folder / name).is_file():
                        found[key] = folder / name
                        break
            if len(found) == len(FILES):
                return found
        return None

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        files, reason = find_or_fetch(
            self.find_files, lambda: torchvision_download(self.torchvision_folder, self.root), self.download
        )
        if files is None:
            names = ", ".join(stem + ".gz" for stem in FILES.values())
            folders = " or ".join(str(d.absolute()) for d in self.candidate_dirs())
            raise DataNotFoundError(
                f"{self.name}: files not found in {folders} (expected {names}); "
                f"download failed ({reason}). {self.how_to_get}"
            )
        arrays = {key: read_idx(path) for key, path in files.items()}
        train_x, train_y = arrays["train_images"], arrays["train_labels"].astype(np.int64)
        test_x, test_y = arrays["test_images"], arrays["test_labels"].astype(np.int64)
        if len(train_x) != len(train_y) or len(test_x) != len(test_y):
            folder = files["train_images"].parent
            raise DataNotFoundError(f"{self.name}: image and label files disagree in length in {folder}")
        held_out = holdout_count("data.val_size", self.val_size, train_y, "training images")
        keep, held = stratified_split(train_y, held_out, self.split_seed)

        def part(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(np.array(x[:, None])), torch.from_numpy(np.array(y))

        return {
            "train": part(train_x[keep], train_y[keep]),
            "val": part(train_x[held], train_y[held]),
            "test": part(test_x, test_y),
        }


class FashionMNISTDataModule(_IdxDataModule):
    torchvision_folder = "FashionMNIST"
    class_names = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
    ]
    how_to_get = (
        "Offline fix: `apt-get install dataset-fashion-mnist` and pass data.root=/usr/share/datasets/fashion-mnist, "
        "or copy the four files from https://github.com/zalandoresearch/fashion-mnist (data/fashion) into data.root."
    )

    def __init__(self, name: str = "fashion_mnist", **kwargs) -> None:
        super().__init__(name=name, **kwargs)


class MNISTDataModule(_IdxDataModule):
    torchvision_folder = "MNIST"
    class_names = [str(i) for i in range(10)]
    how_to_get = (
        "Offline fix: copy the four files (from a machine with a network, e.g. "
        "torchvision.datasets.MNIST(root, download=True)) into data.root."
    )

    def __init__(self, name: str = "mnist", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
