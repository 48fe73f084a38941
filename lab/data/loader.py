"""Batches of in-memory uint8 tensors, each DDP rank its own shard.

The fast path iterates the tensors itself (`TensorBatchLoader`); the standard path hands
`PerImageDataset` and `ShardSampler` to a torch DataLoader. Both draw a training epoch's
order with `shard_order`, so the two paths see the same samples in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class TensorBatchLoader:
    """Iterates (uint8 images, labels) batches over in-memory tensors.

    Shuffling uses the "shuffle" stream of (seed, epoch) (lab.utils.seeds), so an epoch's order
    depends on (seed, epoch) only; `set_epoch` picks the epoch (Lightning calls it through `.sampler`
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
        pin_memory: bool = False,
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
        # Host-kept data on a GPU run (too big for the device): pinned batches copy asynchronously.
        self.pin_memory = bool(pin_memory)
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
        for images, labels in self._batches():
            yield (images.pin_memory(), labels.pin_memory()) if self.pin_memory else (images, labels)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        if self.batch_sampler is not None:
            for idx in self.batch_sampler:
                # The sampler pins its index batches on a CUDA machine, so this copy does not block.
                idx = idx.to(self.images.device, non_blocking=True)
                yield self.images[idx], self.labels[idx]
            return
        if not self.train:  # a contiguous slice: batches are views, no gather
            for b in range(self._num_batches):
                lo = self._start + b * self.batch_size
                hi = min(lo + self.batch_size, self._start + self._count)
                yield self.images[lo:hi], self.labels[lo:hi]
            return
        order = shard_order(len(self.images), self.shuffle, self.seed, epoch, self.rank, self.world_size)
        order = order.to(self.images.device)  # once per epoch
        for b in range(self._num_batches):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]


def shard_order(n: int, shuffle: bool, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Training indices of `rank` for `epoch`: every rank cuts the same permutation (the "shuffle"
    stream of (seed, epoch), or 0..n-1 unshuffled) into equal, disjoint, strided parts."""
    from lab.train.distributed import train_shard_size
    from lab.utils.seeds import generator

    if shuffle:
        order = torch.randperm(n, generator=generator(seed, "shuffle", epoch))
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


class PerImageDataset(torch.utils.data.Dataset):
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
