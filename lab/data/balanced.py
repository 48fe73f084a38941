"""Class-balanced batches for metric learning: P classes x K images per batch.

Batch-hard triplet mining needs a positive for every anchor; a uniformly shuffled
batch of 128 from 1,000 classes rarely has one. Each batch here draws P distinct
classes and K images of each (without replacement while a class has unused images
this epoch, so an epoch visits every image about once).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from lab.errors import ConfigError
from lab.utils.seeds import generator


class ClassBalancedBatchSampler:
    """Yields index tensors of `batch_size` = P * K (K = `samples_per_class`).

    Usable as a DataLoader `batch_sampler` (it yields lists there) or by the in-memory
    fast path (tensors). One epoch has len(labels) // batch_size batches; the order is
    a function of `seed` and the epoch number only (`set_epoch`, which Lightning calls
    through `.sampler` before every train epoch). Under DDP every rank draws the same
    epoch and keeps every `world_size`-th batch from its `rank` on: disjoint batches, the
    same number on every rank.

    Batches are drawn on the CPU. As tensors they are in pinned memory when `pin_memory`
    (the datamodule sets it when the dataset is on the GPU), so the loader's copy to the GPU can be asynchronous
    (`.to(device, non_blocking=True)`); a copy from pageable memory waits for the GPU."""

    def __init__(self, labels: torch.Tensor, batch_size: int, samples_per_class: int, seed: int = 0,
                 as_list: bool = False, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False) -> None:
        from lab.train.distributed import EpochHook

        labels = torch.as_tensor(labels).long().cpu()
        k = int(samples_per_class)
        if k < 2:
            raise ConfigError(f"data.samples_per_class must be >= 2 (an anchor needs a positive), got {k}")
        if batch_size % k:
            raise ConfigError(f"data.batch_size={batch_size} must be a multiple of data.samples_per_class={k}")
        present = torch.unique(labels)
        p = batch_size // k
        if p < 2:
            raise ConfigError(f"data.batch_size={batch_size} / samples_per_class={k} gives {p} class per batch; "
                              "batch-hard mining needs at least 2 (a negative for every anchor)")
        if p > len(present):
            raise ConfigError(f"data.batch_size={batch_size} / samples_per_class={k} asks for {p} classes per batch "
                              f"but the training split has {len(present)}; lower batch_size or raise samples_per_class")
        self.classes_per_batch, self.samples_per_class = p, k
        self.batch_size = p * k
        self.by_class = [(labels == c).nonzero().flatten() for c in present.tolist()]
        self.seed = int(seed)
        self.epoch = 0
        self.as_list = as_list
        self.pin_memory = bool(pin_memory) and not as_list
        self.rank, self.world_size = int(rank), max(int(world_size), 1)
        # Batches drawn per epoch (all ranks together) and kept by each rank.
        self._per_rank = max(len(labels) // self.batch_size // self.world_size, 1)
        self._len = self._per_rank * self.world_size
        self.sampler = EpochHook(self.set_epoch)  # where Lightning looks for set_epoch on a batch sampler

    def set_epoch(self, epoch: int) -> None:
        """The next iteration yields epoch `epoch`'s batches (then the epoch counts on by itself)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._per_rank

    def __iter__(self) -> Iterator[torch.Tensor | list[int]]:
        gen = generator(self.seed, "balanced_sampler", self.epoch)
        self.epoch += 1
        k = self.samples_per_class
        pools = [members[torch.randperm(len(members), generator=gen)] for members in self.by_class]
        used = [0] * len(pools)
        for b in range(self._len):
            # Classes with the most unused images first, ties broken at random: every image
            # is visited about once per epoch and no class is starved.
            remaining = torch.tensor([len(p) - u for p, u in zip(pools, used)], dtype=torch.float64)
            noise = torch.rand(len(pools), generator=gen, dtype=torch.float64)
            chosen = torch.argsort(remaining + noise, descending=True)[: self.classes_per_batch].tolist()
            parts = []
            for c in chosen:
                pool = pools[c]
                if used[c] + k > len(pool):  # this class is used up: reshuffle it and start again
                    pools[c] = pool = pool[torch.randperm(len(pool), generator=gen)]
                    used[c] = 0
                if len(pool) >= k:
                    parts.append(pool[used[c] : used[c] + k])
                    used[c] += k
                else:  # fewer than K images in the class: draw with replacement
                    parts.append(pool[torch.randint(len(pool), (k,), generator=gen)])
            if b % self.world_size != self.rank:
                continue  # another rank's batch (drawn here too: every rank follows the same stream)
            batch = torch.cat(parts)
            if self.as_list:
                yield batch.tolist()
            else:
                yield batch.pin_memory() if self.pin_memory else batch
