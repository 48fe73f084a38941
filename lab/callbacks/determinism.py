"""Epoch-seeded randomness and the task state a checkpoint does not hold, so resumed runs
end exactly where uninterrupted ones do.

Killed mid-epoch and resumed from last.ckpt, a run replays the interrupted epoch. For the
replay to be the same epoch, everything random in an epoch must depend only on (seed,
epoch), never on how many epochs this process has run:

- torch (dropout; CUDA too), numpy and random are reseeded at every train epoch start for
  the "dropout" stream of (seed, epoch, rank) (lab.utils.seeds);
- the datamodule's `set_epoch(epoch)` (batch order, augmentation), when it has one, is
  called at the same moment;
- the task's best-so-far trackers (torchmetrics Max/MinMetric states are not saved in the
  state_dict) and its `best_epoch` travel in the checkpoint through this callback.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics.aggregation import MaxMetric, MinMetric

from lab.utils.seeds import stream_seed

_KEY = "lab_task_state"


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The 32-bit seed of the global generators (dropout, ...) in train epoch `epoch` on `rank`."""
    return stream_seed(seed, "dropout", epoch, rank, bits=32)


class EpochSeeding(Callback):
    """Reseed every train epoch from (seed, epoch); carry best-so-far task state in checkpoints."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._pending: dict[str, Any] | None = None  # state read from a checkpoint, applied once training runs

    @property
    def state_key(self) -> str:
        return "EpochSeeding"

    # --- randomness --------------------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply_pending(pl_module)
        epoch = trainer.current_epoch
        seed = epoch_seed(self.seed, epoch, trainer.global_rank)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # also every CUDA device
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and callable(getattr(datamodule, "set_epoch", None)):
            datamodule.set_epoch(epoch)

    # --- state the checkpoint would otherwise lose ---------------------------------
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self._pending is not None:  # saved before the restored state was applied: keep it as it was
            checkpoint[_KEY] = dict(self._pending)
            return
        state: dict[str, Any] = {"best_epoch": getattr(pl_module, "best_epoch", None)}
        for name, metric in pl_module.named_children():
            if isinstance(metric, (MaxMetric, MinMetric)) and metric.update_count:
                state[name] = float(metric.compute())
        checkpoint[_KEY] = state

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Applied at the first train or validation epoch: the task resets its trackers in on_train_start.
        self._pending = dict(checkpoint.get(_KEY) or {}) or None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._apply_pending(pl_module)

    def _apply_pending(self, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        if "best_epoch" in state and hasattr(pl_module, "best_epoch"):
            pl_module.best_epoch = state["best_epoch"]
        for name, value in state.items():
            metric = getattr(pl_module, name, None)
            if isinstance(metric, (MaxMetric, MinMetric)) and value is not None:
                metric.reset()
                metric.update(torch.tensor(float(value), device=pl_module.device))
