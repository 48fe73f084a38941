"""Multi-process (DDP) support: who is rank zero, how rank > 0 processes are started under Hydra,
and how a split is cut into per-rank shards.

How rank > 0 processes are started under Hydra is lab.train.ddp_launch (the one place that
touches a private Lightning name).

Pure Python at import (no torch): `is_rank_zero()` is used before anything heavy is loaded.
"""

from __future__ import annotations

import os
from typing import Any

# Set by the launcher of rank 0; a later job of a multirun in the same process must not inherit them.
_LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_ENV_AT_START = {key: os.environ.get(key) for key in _LAUNCH_ENV}
# Rank variables set by Lightning's launcher, torchrun, SLURM or LSF; any non-zero one means "not rank 0".
_RANK_ENV = ("LOCAL_RANK", "RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_rank_zero() -> bool:
    """True in the process that writes files and prints (global rank 0), also before the Trainer exists.

    Read from the environment that launchers set before the process starts, so a rank > 0
    process knows it from its first line."""
    for key in _RANK_ENV:
        value = os.environ.get(key, "").strip()
        if value and value.lstrip("-").isdigit() and int(value) != 0:
            return False
    return True


def rank_prefix() -> str:
    """'' on rank 0, 'rank 3: ' elsewhere (for the few lines every rank prints, like errors)."""
    if is_rank_zero():
        return ""
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or os.environ.get("LOCAL_RANK") or "?"
    return f"rank {rank}: "


def reset_after_previous_job() -> None:
    """Before a new Trainer in a process that already ran a DDP job (the next job of a multirun):
    drop the previous job's process group and the launch variables its launcher set, so this job
    starts its own processes instead of believing they were started for it."""
    if os.environ.get("LOCAL_RANK") is None or _ENV_AT_START["LOCAL_RANK"] is not None:
        return  # nothing launched here yet, or an external launcher (torchrun, SLURM) owns the variables
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key in _LAUNCH_ENV:
        if _ENV_AT_START[key] is None:
            os.environ.pop(key, None)


def rank_and_world(trainer: Any) -> tuple[int, int]:
    """(global rank, world size) of a Trainer, (0, 1) without one."""
    if trainer is None:
        return 0, 1
    return int(getattr(trainer, "global_rank", 0)), max(int(getattr(trainer, "world_size", 1)), 1)


def eval_shard(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous part of n eval samples: disjoint, covering, no padding,
    sizes differing by at most one (every sample counts exactly once in synced metrics)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
    return n * rank // world_size, n * (rank + 1) // world_size


def train_shard_size(n: int, world_size: int) -> int:
    """Samples each rank trains on per epoch: the same on every rank (the remainder of the epoch's
    permutation is dropped, a different part each epoch), so no rank waits on a missing batch."""
    return n // world_size if world_size > 1 else n


def gather_shards(part: Any, device: Any) -> Any:
    """Every process's rows of a tensor, concatenated in rank order, on the CPU.

    Each rank holds a disjoint shard of the split (possibly one row longer than another); no
    row is repeated. Moved to `device` for the transfer (NCCL needs CUDA tensors); unequal
    lengths are padded for it and trimmed after (torchmetrics' gather_all_tensors)."""
    import torch
    from torchmetrics.utilities.distributed import gather_all_tensors

    return torch.cat([p.cpu() for p in gather_all_tensors(part.to(device))])


class EpochHook:
    """What Lightning's per-epoch `set_epoch` call finds on a loader's `sampler` attribute.

    Lightning calls `dataloader.sampler.set_epoch(epoch)` before every train epoch; loaders that
    are not DataLoaders expose one of these to get the same call."""

    def __init__(self, callback) -> None:
        self._callback = callback

    def set_epoch(self, epoch: int) -> None:
        self._callback(int(epoch))
