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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lab.data.augment import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, as_size, per_sample_transform
from lab.data.noise import apply_noise
from lab.errors import ConfigError

AUGMENT_KEYS = {"crop_padding", "hflip", "cutout"}


class TensorBatchLoader:
    """Iterates (uint8 images, labels) batches over in-memory tensors.

    Shuffling uses a generator seeded with `seed + epoch`, so an epoch's order depends on
    (seed, epoch) only; `set_epoch` picks the epoch (Lightning calls it through `.sampler`
    before every train epoch) and otherwise each pass counts one on. A final training batch
    of a single sample is dropped (BatchNorm cannot use it).

    Under DDP (`world_size` > 1) each rank iterates its own shard: a training loader takes
    every `world_size`-th sample of the epoch's common permutation, the same number on every
    rank (the remainder is left out, a different part each epoch); an evaluation loader takes
    a contiguous slice with no padding, so each sample is counted exactly once.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        batch_sampler=None,
        rank: int = 0,
        world_size: int = 1,
        train: bool | None = None,
        on_epoch=None,
    ) -> None:
        from lab.train.distributed import EpochHook, eval_shard, train_shard_size

        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.train = shuffle if train is None else bool(train)
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = int(rank), max(int(world_size), 1)
        self.batch_sampler = batch_sampler  # yields index tensors (class-balanced batches)
        n = len(images)
        if self.train:
            self._start, self._count = 0, train_shard_size(n, self.world_size)
        else:
            self._start, stop = eval_shard(n, self.rank, self.world_size)
            self._count = stop - self._start
        self._num_batches = -(-self._count // self.batch_size)
        if self.train and self._count > 1 and self._count % self.batch_size == 1:
            self._num_batches -= 1
        self._on_epoch = on_epoch  # also told the epoch (the datamodule's augmentation)
        if self.shuffle or batch_sampler is not None:
            # Lightning's per-epoch set_epoch call looks for it on `.sampler`.
            self.sampler = EpochHook(self._epoch_starts)

    def _epoch_starts(self, epoch: int) -> None:
        self.set_epoch(epoch)
        if self._on_epoch is not None:
            self._on_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """The next pass yields epoch `epoch` (order a function of seed and epoch only)."""
        self.epoch = int(epoch)
        if self.batch_sampler is not None and hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batch_sampler) if self.batch_sampler is not None else self._num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        if self.batch_sampler is not None:
            for idx in self.batch_sampler:
                idx = idx.to(self.images.device)
                yield self.images[idx], self.labels[idx]
            return
        if not self.train:  # a contiguous slice: batches are views, no gather
            for b in range(self._num_batches):
                lo = self._start + b * self.batch_size
                hi = min(lo + self.batch_size, self._start + self._count)
                yield self.images[lo:hi], self.labels[lo:hi]
            return
        order = shard_order(len(self.images), self.shuffle, self.seed, epoch, self.rank, self.world_size)
        order = order.to(self.images.device)
        for b in range(self._num_batches):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]


def shard_order(n: int, shuffle: bool, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Training indices of `rank` for `epoch`: every rank cuts the same permutation (seeded with
    seed + epoch, or 0..n-1 unshuffled) into equal, disjoint, strided parts."""
    from lab.train.distributed import train_shard_size

    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    else:
        order = torch.arange(n)
    if world_size > 1:
        order = order[rank : train_shard_size(n, world_size) * world_size : world_size]
    return order


class ShardSampler(torch.utils.data.Sampler):
    """The DataLoader path's sampler: the same per-rank indices as TensorBatchLoader.

    Training: `shard_order` (Lightning calls `set_epoch` before every epoch). Evaluation: the
    rank's contiguous slice in stored order, no padding (Lightning's DistributedSampler would
    repeat samples to even out the ranks and count them twice)."""

    def __init__(self, n: int, train: bool, shuffle: bool = False, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        from lab.train.distributed import eval_shard, train_shard_size

        self.n, self.train, self.shuffle, self.seed = int(n), bool(train), bool(shuffle), int(seed)
        self.rank, self.world_size = int(rank), max(int(world_size), 1)
        self.epoch = 0
        if self.train:
            self._len = train_shard_size(self.n, self.world_size)
        else:
            self._start, stop = eval_shard(self.n, self.rank, self.world_size)
            self._len = stop - self._start

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        self.epoch += 1
        if not self.train:
            return iter(range(self._start, self._start + self._len))
        return iter(shard_order(self.n, self.shuffle, self.seed, epoch, self.rank, self.world_size).tolist())


class _SampleDataset(torch.utils.data.Dataset):
    """Per-image view of the uint8 arrays for the standard DataLoader path (PIL + torchvision)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        from PIL import Image

        self._from_array = Image.fromarray
        self.images = images.numpy()
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        array = self.images[i]
        img = self._from_array(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
        return self.transform(img), self.labels[i]


class InMemoryClassificationData(L.LightningDataModule):
    """Base for classification datamodules whose splits fit in memory.

    Subclasses implement `load()` returning {"train"|"val"|"test": (uint8 images
    [N, C, H, W], int64 labels [N])} and set `class_names`. Normalisation statistics
    are measured on the training split (or ImageNet's, `normalize: imagenet`).
    Label noise, when asked for, is applied to the training split only, after val
    has been carved out. `train_on=[train, val]` trains on both (fine-tuning on all
    labelled data); val is still evaluated, but is then no longer held out.
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
        splits = _cached_load(self)
        for key in ("train", "val", "test"):
            if key not in splits:
                raise KeyError(f"{type(self).__name__}.load() returned no '{key}' split")
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
        sampler = None
        if train and self.samples_per_class:
            from lab.data.balanced import ClassBalancedBatchSampler

            sampler = ClassBalancedBatchSampler(labels, batch_size, self.samples_per_class, seed=self.seed,
                                                as_list=not self.fast_path, rank=rank, world_size=world)
            sampler.set_epoch(self.epoch)
        if self.fast_path:
            device = self._device()
            if device.type == "cuda" and images.device != device:  # the dataset moves to the GPU once
                self.splits[split] = (images.to(device), labels.to(device))
                images, labels = self.splits[split]
            loader = TensorBatchLoader(images, labels, batch_size, shuffle=shuffle, seed=self.seed,
                                       batch_sampler=sampler, rank=rank, world_size=world, train=train,
                                       on_epoch=self._set_transform_epoch if train else None)
        else:
            transform = per_sample_transform(self.mean, self.std, train=train, image_size=tuple(images.shape[-2:]),
                                             **self._transform_args(train))
            dataset = _SampleDataset(images, labels, transform)
            workers = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0,
                       "pin_memory": torch.cuda.is_available()}
            if sampler is not None:
                loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **workers)
            else:
                # Our own per-rank sampler (trainer.use_distributed_sampler is off: Lightning's pads eval sets).
                shard = ShardSampler(len(labels), train=train, shuffle=shuffle, seed=self.seed, rank=rank,
                                     world_size=world)
                gen = torch.Generator().manual_seed(self.seed)  # worker seeds
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


_LOADED: dict[tuple, tuple[dict, dict]] = {}  # the last dataset load() returned in this process


def _cached_load(data: InMemoryClassificationData) -> dict:
    """`data.load()`, reused by the next job of a sweep that reads the same files with the
    same settings: the jobs of a multirun share one process, and decoding Fashion-MNIST's
    70,000 images again for every job costs seconds per job. The key is the datamodule's
    class, the values of the attributes it names in `load_settings` (what its load() reads:
    root, split seed, split sizes; not the run's seed, batch size or augmentation) and the
    size and time of the files under its root. Attributes load() sets on the instance (class
    names, ...) are restored on a hit. One dataset is kept. Datamodules without
    `load_settings` (folders of images) are read again. The arrays are never modified in
    place (splits, noise, device moves copy)."""
    settings = getattr(type(data), "load_settings", None)
    if settings is None:
        return data.load()
    values = tuple((k, str(v) if isinstance(v, Path) else v)  # a setting a subclass lacks counts as None
                   for k, v in ((k, getattr(data, k, None)) for k in settings))
    key = (type(data).__module__, type(data).__qualname__, values, _files_stamp(getattr(data, "root", None)))
    if key in _LOADED:
        loaded, state = _LOADED[key]
        data.__dict__.update(state)
        return dict(loaded)
    before = dict(vars(data))
    loaded = data.load()
    state = {k: v for k, v in vars(data).items() if k not in before or before[k] is not v}
    _LOADED.clear()
    _LOADED[key] = (loaded, state)
    return dict(loaded)


def _files_stamp(root) -> tuple:
    """(relative path, size, mtime) of up to 200 files under `root`: a changed file misses the cache."""
    import os

    if root is None or not Path(root).is_dir():
        return ()
    stamp = []
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            stamp.append((os.path.relpath(os.path.join(folder, name), root), st.st_size, st.st_mtime_ns))
            if len(stamp) >= 200:
                return tuple(stamp)
    return tuple(stamp)
