"""Checkpoints: Lightning's ModelCheckpoint, plus a last.ckpt that keeps up with training.

last.ckpt exists for `resume=<run>`. Lightning (2.6) writes it only in an epoch where the best
checkpoint was also written, so after a run of epochs without a new best it lags behind and a
resumed run repeats them. Writing it after every epoch instead is a full model + optimizer
write per epoch, a cost with no use on studies of many short epochs (digits: 30 epochs of
0.3 s). Here last.ckpt is also written, in an epoch without a new best, when `last_every_s`
seconds have passed since it was last written, and after the final epoch. Every random stream
of an epoch is a function of (seed, epoch), so a run resumed from any last.ckpt ends exactly
like an uninterrupted one; the throttle only bounds how much a resumed run repeats.

In an epoch with a new best, Lightning writes the same state twice, the best checkpoint and then
last.ckpt (15 ms each for the Fashion-MNIST CNN on 2 CPU cores, seconds for a ResNet-50). Here
last.ckpt is then a copy of the file just written (made under a temporary name, then renamed into
place), once last.ckpt has been written the ordinary way, so that the copy records last.ckpt's own
path, and in one process writing local files synchronously; elsewhere both are written. The
state's hooks (on_save_checkpoint) then run once for the two files.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class Checkpoint(ModelCheckpoint):
    def __init__(self, last_every_s: float = 30.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if last_every_s < 0:
            raise ValueError(f"callbacks.model_checkpoint.last_every_s must be >= 0, got {last_every_s}")
        self.last_every_s = float(last_every_s)
        self._last_written = float("-inf")

    @property
    def state_key(self) -> str:
        # Lightning builds this key (a dict's repr) for every callback hook call, a dozen a
        # training step, as its profiler's label; what it names is fixed by __init__.
        key = self.__dict__.get("_cached_state_key")
        if key is None:
            key = self._cached_state_key = super().state_key
        return key

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._every_n_train_steps < 1 and self._train_time_interval is None:
            return  # saving by epoch only: Lightning's per-batch check would only find that out, every batch
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _copies_last(self, trainer: L.Trainer, monitor_candidates: dict) -> bool:
        """Whether last.ckpt would repeat the checkpoint Lightning has just written at this step,
        and a copy of that file can stand for it."""
        from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
        from lightning.pytorch.plugins.io import TorchCheckpointIO

        written = getattr(self, "_last_checkpoint_saved", None)  # the file Lightning wrote last, and when
        if not (self.save_last is True and self.save_top_k != 0 and written and written != self.last_model_path
                and getattr(self, "_last_global_step_saved", None) == trainer.global_step):
            return False
        # The copy holds the written file's record of last.ckpt's path: it must already be this
        # last.ckpt, or a run resumed from the copy would go on writing last-v1.ckpt beside it.
        if self.last_model_path != self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST):
            return False
        # One process, a local single file written synchronously by torch.save (not sharded, async or remote).
        return (trainer.world_size == 1 and type(trainer.strategy.checkpoint_io) is TorchCheckpointIO
                and _is_local_file_protocol(written) and os.path.isfile(written))

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        if self._copies_last(trainer, monitor_candidates):  # Lightning's "link" path, with a copy (below) for the link
            self.save_last, self._copying = "link", True
            try:
                super()._save_last_checkpoint(trainer, monitor_candidates)
            finally:
                self.save_last, self._copying = True, False
        else:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_written = time.monotonic()

    def _link_checkpoint(self, trainer: L.Trainer, filepath: str, linkpath: str) -> None:
        """A copy of `filepath` at `linkpath` when the last checkpoint repeats the one just written
        (a real file: it outlives the best one and travels alone); Lightning's symlink otherwise."""
        if not getattr(self, "_copying", False):
            return super()._link_checkpoint(trainer, filepath, linkpath)
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            partial = f"{linkpath}.partial"
            shutil.copyfile(filepath, partial)
            os.replace(partial, linkpath)  # atomic: a reader sees the old last.ckpt or the new one
        trainer.strategy.barrier()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):  # no validation: this is where Lightning saves
            self._keep_last_up_to_date(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._keep_last_up_to_date(trainer)

    def _keep_last_up_to_date(self, trainer: L.Trainer) -> None:
        # Skipped when Lightning already wrote a checkpoint (best and last) at this step.
        if not self.save_last or self._should_skip_saving_checkpoint(trainer):
            return
        final = trainer.should_stop or (trainer.max_epochs is not None and trainer.max_epochs >= 0
                                        and trainer.current_epoch + 1 >= trainer.max_epochs)
        if final or time.monotonic() - self._last_written >= self.last_every_s:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
