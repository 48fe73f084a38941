"""Classification datasets small enough to live in memory as one uint8 tensor.

The fast path (default): batches are cut from the uint8 tensor by index permutation,
moved to the training device (the whole dataset goes to the GPU once when there is
one), and augmented there as batched tensor ops in `on_after_batch_transfer`. No
per-image Python and no worker processes in the hot loop.

The standard path (`data.fast_path=false`): a DataLoader over the same arrays with
per-image torchvision transforms on PIL images in worker processes.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lab.data.augment import BatchTransform, as_size, per_sample_transform
from lab.data.imagenet_stats import IMAGENET_MEAN, IMAGENET_STD
from lab.data.load_cache import cached_load
from lab.data.loader import PerImageDataset, ShardSampler, TensorBatchLoader
from lab.data.noise import apply_noise
from lab.data.splits import check_folds, pooled_fold
from lab.errors import ConfigError
from lab.utils.seeds import generator

AUGMENT_KEYS = {"crop_padding", "hflip", "cutout"}


class InMemoryClassificationData(L.LightningDataModule):
    """Base for classification datamodules whose splits fit in memory.

    Subclasses implement `load()` returning {"train"|"val"|"test": (uint8 images
    [N, C, H, W], int64 labels [N])} and set `class_names`. Normalisation statistics
    are measured on the training split (or ImageNet's, `normalize: imagenet`).
    Label noise, when asked for, is applied to the training split only, after val
    has been carved out. `train_on=[train, val]` trains on both (fine-tuning on all
    labelled data); val is still evaluated, but is then no longer held out.

    K-fold cross-validation (`folds=K`, `fold=i`): whatever load() returned as train and val
    is pooled (train ∪ val: every labelled sample but test) and partitioned into K stratified
    folds drawn from the split seed (`split_seed`; lab.data.splits.pooled_fold); fold i
    becomes val and the other K-1 folds train. test is never folded. The split is made here,
    after load(), so every dataset gets it, whichever way its load() chose val; the pool is
    put in a canonical order first (by a hash of each image), so the folds, and the order of
    the samples in them, depend on the pool's contents and the split seed only: not on
    val_size, nor on file order.
    folds=0/null keeps load()'s own val split, unchanged.
    """

    name: str = "data"
    class_names: list[str] = []
    # Standard asymmetric-noise pairs (source class -> target class), by name.
    noise_pairs: Mapping[str, str] | None = None

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        seed: int = 0,
        fast_path: bool = True,
        num_workers: int = 2,
        normalize: str = "dataset",
        augment: Mapping[str, Any] | None = None,
        resize: int | Sequence[int] | None = None,
        to_rgb: bool = False,
        noise_ratio: float = 0.0,
        noise_type: str = "symmetric",
        noise_seed: int | None = None,
        noise_mapping: Mapping | None = None,
        samples_per_class: int = 0,
        train_on: Sequence[str] = ("train",),
        folds: int | None = None,
        fold: int | None = 0,
    ) -> None:
        super().__init__()
        if int(batch_size) <= 0:
            raise ConfigError(f"data.batch_size must be a positive integer, got {batch_size}")
        if eval_batch_size is not None and int(eval_batch_size) <= 0:
            raise ConfigError(f"data.eval_batch_size must be a positive integer, got {eval_batch_size}")
        if normalize not in ("dataset", "imagenet", "none"):
            raise ConfigError(f"data.normalize must be dataset, imagenet or none, got {normalize!r}")
        unknown = set(augment or {}) - AUGMENT_KEYS
        if unknown:
            raise ConfigError(f"data.augment: unknown keys {sorted(unknown)}; known: {sorted(AUGMENT_KEYS)}")
        if not 0.0 <= float(noise_ratio) < 1.0:
            raise ConfigError(f"data.noise_ratio must be in [0, 1), got {noise_ratio}")
        if int(samples_per_class) and (int(samples_per_class) < 2 or int(batch_size) % int(samples_per_class)):
            raise ConfigError(f"data.samples_per_class={samples_per_class} must be 0 (plain shuffling) or >= 2 "
                              f"and divide data.batch_size={batch_size}")
        self.samples_per_class = int(samples_per_class)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.seed = int(seed)
        self.fast_path = bool(fast_path)
        self.num_workers = int(num_workers)
        self.normalize = normalize
        self.augment = {"crop_padding": 0, "hflip": False, "cutout": 0, **dict(augment or {})}
        self.resize = as_size(resize)
        self.to_rgb = bool(to_rgb)
        self.noise_ratio = float(noise_ratio)
        self.noise_type = noise_type
        self.noise_seed = self.seed if noise_seed is None else int(noise_seed)
        self.noise_mapping = noise_mapping
        self.train_on = _check_train_on(train_on)
        self.folds, self.fold = check_folds(folds, fold)
        if self.folds and "val" in self.train_on:
            raise ConfigError(f"data.folds={self.folds} with data.train_on=[train, val] would train every fold on "
                              "all of train+val; use one or the other")
        self.predict_split = "test"  # the split predict_dataloader serves (lab.predict split=...)
        self.epoch = 0  # the train epoch the next train batches belong to (set_epoch)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.clean_train_labels: torch.Tensor | None = None
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
        """Channels the model sees (3 when grey images are expanded with to_rgb)."""
        self._ensure_loaded()
        channels = int(self.splits["train"][0].shape[1])
        return 3 if self.to_rgb else channels

    @property
    def image_size(self) -> tuple[int, int]:
        """Height and width the model sees (after `resize`)."""
        self._ensure_loaded()
        if self.resize is not None:
            return self.resize
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

    # --- loading -----------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self.splits:
            return
        splits = cached_load(self)
        for key in ("train", "val", "test"):
            if key not in splits:
                raise KeyError(f"{type(self).__name__}.load() returned no '{key}' split")
        if self.folds:  # before train_on, the statistics and the label noise: all are of the fold's train
            splits = {**splits, **self._fold_splits(splits["train"], splits["val"])}
        if "val" in self.train_on:  # before the statistics and the label noise: both are of what is trained on
            (train_x, train_y), (val_x, val_y) = splits["train"], splits["val"]
            splits = {**splits, "train": (torch.cat([train_x, val_x]), torch.cat([train_y, val_y]))}
        channels = int(splits["train"][0].shape[1])
        if self.normalize == "dataset":
            self.mean, self.std = _channel_stats(splits["train"][0])
        elif self.normalize == "imagenet":
            if channels == 3:
                self.mean, self.std = list(IMAGENET_MEAN), list(IMAGENET_STD)
            else:  # grey images fed to ImageNet models: the mean of ImageNet's statistics
                self.mean, self.std = [sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3]
        else:
            self.mean, self.std = [0.0] * channels, [1.0] * channels
        if self.noise_ratio > 0:
            images, clean = splits["train"]
            noisy = apply_noise(clean, self.class_names, self.noise_ratio, self.noise_type, self.noise_seed,
                                self.noise_mapping or self.noise_pairs)
            self.clean_train_labels = clean
            splits = {**splits, "train": (images, noisy)}
        self.splits = splits

    def _fold_splits(self, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor]):
        """{"train", "val"}: fold `fold` of `folds` of train ∪ val as val, the other folds as train."""
        from lab.train.distributed import is_rank_zero

        images, labels = torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]])
        split_seed = int(getattr(self, "split_seed", 0))
        rows = images.reshape(len(images), -1).numpy()  # the pool's images, flattened: what the order hashes
        keep, held = (torch.from_numpy(i) for i in pooled_fold(rows, labels.numpy(), self.folds, self.fold, split_seed,
                                                                self.class_names))
        if is_rank_zero():
            print(f"note: data.folds={self.folds}: val is fold {self.fold} ({len(held)} of the {len(labels)} "
                  f"train+val samples, stratified, split_seed={split_seed}), train the other {self.folds - 1} folds; "
                  "the dataset's own val split (data.val_size or val_fraction) is not used")
        return {"train": (images[keep], labels[keep]), "val": (images[held], labels[held])}

    def setup(self, stage: str | None = None) -> None:
        self._ensure_loaded()

    def save_artifacts(self, run_dir: str | Path) -> None:
        """label_noise.csv: index in the training split, original label, noisy label."""
        if self.clean_train_labels is None:
            return
        noisy = self.splits["train"][1]
        changed = (noisy != self.clean_train_labels).nonzero().flatten().tolist()
        with open(Path(run_dir) / "label_noise.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["train_index", "original", "noisy", "original_name", "noisy_name"])
            for i in changed:
                a, b = int(self.clean_train_labels[i]), int(noisy[i])
                writer.writerow([i, a, b, self.class_names[a], self.class_names[b]])

    # --- batches -----------------------------------------------------------------
    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _fits_on(self, device: torch.device, split: str, images: torch.Tensor, labels: torch.Tensor) -> bool:
        """Whether `split` may live on the GPU (lab.train.device.room_for); otherwise it stays in host
        memory and each batch is pinned and copied without blocking (said once per split)."""
        from lab.train.device import DATA_SHARE_OF_FREE, free_bytes, room_for
        from lab.train.distributed import is_rank_zero

        nbytes = images.nbytes + labels.nbytes
        free = free_bytes(device)
        if room_for(nbytes, free):
            return True
        if is_rank_zero():
            print(f"note: data split {split} ({nbytes / 2**30:.1f} GiB as uint8) is more than "
                  f"{DATA_SHARE_OF_FREE:.0%} of {device}'s free memory ({free / 2**30:.1f} GiB); it stays in host "
                  "memory and each batch is pinned and copied to the GPU as it is needed")
        return False

    def _transform_args(self, train: bool) -> dict[str, Any]:
        args = dict(self.augment) if train else {}
        return {**args, "resize": self.resize, "to_rgb": self.to_rgb}

    def _loader(self, split: str, train: bool):
        """A loader of `split` for this process: its DDP shard (the whole split in one process)."""
        from lab.train.distributed import rank_and_world

        self._ensure_loaded()
        images, labels = self.splits[split]
        batch_size = self.batch_size if train else self.eval_batch_size
        trainer = getattr(self, "trainer", None)
        rank, world = rank_and_world(trainer)
        # Lightning's overfit_batches means the same few batches every epoch: no shuffling.
        shuffle = train and not (trainer is not None and trainer.overfit_batches)
        # Where the batches come from: the GPU when the split fits there (it moves once), else host memory.
        pin = False
        if self.fast_path:
            device = self._device()
            if device.type == "cuda" and images.device != device:
                if self._fits_on(device, split, images, labels):
                    self.splits[split] = (images.to(device), labels.to(device))
                    images, labels = self.splits[split]
                else:
                    pin = True  # host-kept split: its batches are pinned instead
        sampler = None
        if train and self.samples_per_class:
            from lab.data.balanced import ClassBalancedBatchSampler

            # Index batches are pinned only when they index a dataset on the GPU (copied there without blocking).
            sampler = ClassBalancedBatchSampler(labels, batch_size, self.samples_per_class, seed=self.seed,
                                                as_list=not self.fast_path, rank=rank, world_size=world,
                                                pin_memory=images.is_cuda)
            sampler.set_epoch(self.epoch)
        if self.fast_path:
            loader = TensorBatchLoader(images, labels, batch_size, shuffle=shuffle, seed=self.seed,
                                       batch_sampler=sampler, rank=rank, world_size=world, train=train,
                                       on_epoch=self._set_transform_epoch if train else None, pin_memory=pin)
        else:
            transform = per_sample_transform(self.mean, self.std, train=train, image_size=tuple(images.shape[-2:]),
                                             **self._transform_args(train))
            dataset = PerImageDataset(images, labels, transform)
            workers = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0,
                       "pin_memory": torch.cuda.is_available()}
            if sampler is not None:
                loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **workers)
            else:
                # Our own per-rank sampler (trainer.use_distributed_sampler is off: Lightning's pads eval sets).
                shard = ShardSampler(len(labels), train=train, shuffle=shuffle, seed=self.seed, rank=rank,
                                     world_size=world)
                gen = generator(self.seed, "workers")  # the workers' base seed
                loader = torch.utils.data.DataLoader(
                    dataset, batch_size=batch_size, sampler=shard, generator=gen,
                    drop_last=train and len(shard) % batch_size == 1, **workers,
                )
        if train:
            self._train_loader = loader
            self.set_epoch(self.epoch)
        return loader

    def set_epoch(self, epoch: int) -> None:
        """Make train epoch `epoch`'s batch order and augmentation a function of (seed, epoch) only.

        Called before every train epoch (by Lightning through the train loader, and by whoever
        resumes a run), so epoch e of a resumed run is epoch e of an uninterrupted one."""
        loader = getattr(self, "_train_loader", None)
        if isinstance(loader, TensorBatchLoader):
            loader.set_epoch(int(epoch))
        elif loader is not None:
            for part in (loader.sampler, loader.batch_sampler):
                if callable(getattr(part, "set_epoch", None)):
                    part.set_epoch(int(epoch))
        self._set_transform_epoch(epoch)

    def _set_transform_epoch(self, epoch: int) -> None:
        """The epoch of the next train batches, and the train augmentation's stream for it."""
        from lab.train.distributed import rank_and_world

        self.epoch = int(epoch)
        if self.splits:
            rank, _ = rank_and_world(getattr(self, "trainer", None))
            self.batch_transform(True).set_epoch(self.epoch, rank)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """(images, labels) straight to the device; Lightning's generic walk over the batch
        (apply_to_collection) costs a quarter of a millisecond per batch."""
        if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch):
            return tuple(t.to(device, non_blocking=True) for t in batch)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Fast path: uint8 batches become augmented, normalised floats on the device."""
        x, y = batch
        if x.dtype != torch.uint8:
            return batch
        training = bool(getattr(self, "trainer", None) and self.trainer.training)
        return self.batch_transform(training)(x), y

    def batch_transform(self, train: bool) -> BatchTransform:
        """The fast path's transform for train (random) or val/test (deterministic) batches."""
        if not hasattr(self, "_transforms"):
            self._ensure_loaded()
            self._transforms = {
                flag: BatchTransform(self.mean, self.std, train=flag, seed=self.seed, **self._transform_args(flag))
                for flag in (True, False)
            }
        return self._transforms[train]

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("val", train=False)

    def test_dataloader(self):
        return self._loader("test", train=False)

    def predict_dataloader(self):
        """`predict_split` in stored order with the eval transform, so row i is sample i of the split."""
        if self.predict_split not in ("train", "val", "test"):
            raise ConfigError(f"split must be train, val or test, got {self.predict_split!r}")
        return self._loader(self.predict_split, train=False)


def _check_train_on(train_on: Sequence[str] | str) -> list[str]:
    """data.train_on: [train] or [train, val]. The test split is never trained on: it is what runs report."""
    names = list(dict.fromkeys([train_on] if isinstance(train_on, str) else [str(s) for s in train_on or ()]))
    if "test" in names:
        raise ConfigError("data.train_on must not include test: test/* is the held-out result every run reports; "
                          "train on [train, val] at most")
    if "train" not in names or set(names) - {"train", "val"}:
        raise ConfigError(f"data.train_on must be [train] or [train, val], got {names}")
    from lab.train.distributed import is_rank_zero

    if "val" in names and is_rank_zero():  # once, not once per DDP process
        print("warning: data.train_on includes val: it is trained on, so val/* metrics and the best-checkpoint "
              "choice (by val/top1) are no longer held out; test/* still is")
    return names


def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images in [0, 1], in chunks (no full float copy)."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.pow(2).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.clamp_min(1e-6).tolist()
