"""scikit-learn's bundled digits: real data that needs no download."""

from __future__ import annotations

import numpy as np
import torch

from lab.data.memory import InMemoryClassificationData
from lab.data.splits import stratified_split
from lab.errors import ConfigError


class DigitsDataModule(InMemoryClassificationData):
    """1,797 8x8 grey digits (values 0..16 rescaled to uint8), 10 classes.

    Train/val/test are a stratified split fixed by `split_seed`, independent of the
    training seed, so a seed sweep trains on the same split.
    """

    # What load() reads: a sweep's jobs with equal values share one load (load_cache.cached_load).
    load_settings = ("split_seed", "test_fraction", "val_fraction")

    class_names = [str(i) for i in range(10)]

    def __init__(
        self,
        name: str = "digits",
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        **common,
    ) -> None:
        common.setdefault("batch_size", 64)
        common.setdefault("eval_batch_size", 512)
        super().__init__(**common)
        self.name = name
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < float(value) < 1.0:
                raise ConfigError(f"data.{key} must be in (0, 1), got {value}")
        if val_fraction + test_fraction >= 1.0:
            raise ConfigError(f"data.val_fraction + data.test_fraction must be < 1, got {val_fraction + test_fraction}")
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.split_seed = int(split_seed)

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # N,1,8,8
        labels = bunch.target.astype(np.int64)
        rest, test = stratified_split(labels, self.test_fraction, self.split_seed, part="test")
        val_share = self.val_fraction / (1.0 - self.test_fraction)
        train_pos, val_pos = stratified_split(labels[rest], val_share, self.split_seed)
        train, val = rest[train_pos], rest[val_pos]

        def part(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(images[idx].copy()), torch.from_numpy(labels[idx].copy())

        return {"train": part(train), "val": part(val), "test": part(test)}
