"""Datasets small enough to live in memory as one uint8 tensor.

Batches are cut by index permutation and normalised as one tensor op per batch:
no per-image Python and no DataLoader worker processes in the hot loop.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import lightning as L
import torch


class TensorBatchLoader:
    """Iterates (images, labels) batches over in-memory uint8 images.

    Shuffling uses a generator seeded with `seed + epoch`, so runs are repeatable.
    Images are converted to float and normalised with `mean`/`std` per batch.
    A final training batch of a single sample is dropped (BatchNorm cannot use it).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        shape = (1, -1, 1, 1)
        self._scale = (1.0 / (255.0 * torch.tensor(std, dtype=torch.float32))).view(shape)
        self._shift = (torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)).view(shape)
        n = len(images)
        self._num_batches = -(-n // self.batch_size)
        if shuffle and n > 1 and n % self.batch_size == 1:
            self._num_batches -= 1

    def __len__(self) -> int:
        return self._num_batches

    @property
    def dataset_size(self) -> int:
        return len(self.images)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mul_(self._scale).sub_(self._shift)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = None
        self.epoch += 1
        for b in range(self._num_batches):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if order is None:
                x, y = self.images[lo:hi], self.labels[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = self.images[idx], self.labels[idx]
            yield self._normalise(x), y


class InMemoryClassificationData(L.LightningDataModule):
    """Base for classification datamodules whose splits fit in memory.

    Subclasses implement `load()` returning {"train"|"val"|"test": (uint8 images
    [N, C, H, W], int64 labels [N])} and set `class_names`. Normalisation statistics
    are measured on the training split.
    """

    name: str = "data"
    class_names: list[str] = []

    def __init__(self, batch_size: int = 128, eval_batch_size: int | None = None, seed: int = 0) -> None:
        super().__init__()
        if int(batch_size) <= 0:
            raise ValueError(f"data.batch_size must be a positive integer, got {batch_size}")
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.seed = seed
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mean: list[float] = []
        self.std: list[float] = []

    # --- what subclasses provide -------------------------------------------------
    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- the protocol models and tasks read --------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        self._ensure_loaded()
        return int(self.splits["train"][0].shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        self._ensure_loaded()
        h, w = self.splits["train"][0].shape[-2:]
        return int(h), int(w)

    def model_inputs(self) -> dict[str, object]:
        """Keyword arguments every image model takes from the data."""
        return {"in_channels": self.in_channels, "num_classes": self.num_classes, "image_size": list(self.image_size)}

    def task_inputs(self) -> dict[str, object]:
        """Keyword arguments the classification task takes from the data."""
        return {"num_classes": self.num_classes, "class_names": list(self.class_names)}

    def split_sizes(self) -> dict[str, int]:
        self._ensure_loaded()
        return {k: len(v[1]) for k, v in self.splits.items()}

    # --- Lightning hooks ---------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self.splits:
            return
        splits = self.load()
        for key in ("train", "val", "test"):
            if key not in splits:
                raise KeyError(f"{type(self).__name__}.load() returned no '{key}' split")
        self.splits = splits
        train = splits["train"][0].float().div_(255.0)
        self.mean = train.mean(dim=(0, 2, 3)).tolist()
        self.std = train.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()

    def setup(self, stage: str | None = None) -> None:
        self._ensure_loaded()

    def _loader(self, split: str, train: bool) -> TensorBatchLoader:
        self._ensure_loaded()
        images, labels = self.splits[split]
        return TensorBatchLoader(
            images,
            labels,
            batch_size=self.batch_size if train else self.eval_batch_size,
            mean=self.mean,
            std=self.std,
            shuffle=train,
            seed=self.seed,
        )

    def train_dataloader(self) -> TensorBatchLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> TensorBatchLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> TensorBatchLoader:
        return self._loader("test", train=False)
