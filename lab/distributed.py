"""Multi-process (DDP) support: who is rank zero, how rank > 0 processes are started under Hydra,
and how a split is cut into per-rank shards.

Lightning's DDP launcher starts ranks 1..N-1 by re-running the command line. Under Hydra it
passes sys.argv plus `hydra.run.dir=<run.dir>`: in a multirun that re-runs the whole sweep
(`-m` is in sys.argv) in every child, and `run.dir` is neither the job's folder nor stable
(its `${now:...}` resolves again). `install_launcher_patch()` replaces that command with this
job's own overrides and its real output folder, so every job leaves exactly one folder.

Pure Python at import (no torch): `is_rank_zero()` is used before anything heavy is loaded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

# Set by the launcher of rank 0; a later job of a multirun in the same process must not inherit them.
_LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_ENV_AT_START = {key: os.environ.get(key) for key in _LAUNCH_ENV}
# Rank variables set by Lightning's launcher, torchrun, SLURM or LSF; any non-zero one means "not rank 0".
_RANK_ENV = ("LOCAL_RANK", "RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
# Overrides the child command sets itself, or that belong to the sweep rather than to one job.
_CHILD_OWN = ("hydra.run.dir", "hydra.output_subdir", "hydra.job.name", "hydra.mode", "hydra/launcher",
              "hydra/sweeper")
_CHILD_OWN_PREFIXES = ("hydra.run.", "hydra.sweep.", "hydra.launcher.", "hydra.sweeper.")

# lab's Hydra entry points by their primary config.
_ENTRY_BY_CONFIG = {"config": "lab.run", "eval": "lab.eval", "predict": "lab.predict"}

_child_args: list[str] | None = None


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


def set_child_args(args: Sequence[str] | None) -> None:
    """The arguments rank > 0 processes get instead of Hydra's task overrides.

    lab.eval and lab.predict read their command line before Hydra starts (Hydra sees only their
    own keys), so their children need the user's whole command line back."""
    global _child_args
    _child_args = None if args is None else [str(a) for a in args]


def _hydra_quote(value: str) -> str:
    """A value Hydra's override parser reads back verbatim (paths may hold '=', ',' or spaces)."""
    return "'" + value.replace("'", "\\'") + "'"


def _is_child_own(arg: str) -> bool:
    if arg in ("-m", "--multirun"):
        return True
    key = arg.lstrip("+~").split("=", 1)[0]
    return key in _CHILD_OWN or key.startswith(_CHILD_OWN_PREFIXES)


def child_command(local_rank: int) -> tuple[list[str], str]:
    """The command and working directory of rank `local_rank` of this Hydra job.

    `python -m <entry>` + the job's own overrides (a multirun job's, not the sweep's, with its
    hydra.* settings but not the launcher's or sweeper's) +
    `hydra.run.dir=<this job's output folder>`, no `.hydra/` (rank 0 writes it) and a log file
    of its own; never `-m`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    import __main__

    hydra_cfg = HydraConfig.get()
    spec = getattr(__main__, "__spec__", None)
    main_module = spec.name.removesuffix(".__main__") if spec is not None and spec.name else None
    if main_module is None or not main_module.startswith("lab."):
        # A launcher's own process (submitit, joblib) runs the job: name lab's entry from its config.
        main_module = _ENTRY_BY_CONFIG.get(str(hydra_cfg.job.config_name), main_module)
    if main_module:
        command = [sys.executable, "-m", main_module]
    else:
        command = [sys.executable, os.path.abspath(sys.argv[0])]
    if _child_args is not None:
        args = list(_child_args)
    else:  # the job's Hydra settings (hydra.job.chdir=...) too, so the child works where rank 0 does
        args = [str(o) for o in (*hydra_cfg.overrides.hydra, *hydra_cfg.overrides.task)]
    command += [a for a in args if not _is_child_own(a)]
    command += [
        f"hydra.run.dir={_hydra_quote(str(hydra_cfg.runtime.output_dir))}",
        "hydra.output_subdir=null",
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
    ]
    return command, get_original_cwd()


def install_launcher_patch() -> None:
    """Make Lightning's subprocess launcher start rank > 0 as `child_command` (idempotent)."""
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as pytorch_launcher

    for module in (fabric_launcher, pytorch_launcher):
        module._hydra_subprocess_cmd = child_command


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
