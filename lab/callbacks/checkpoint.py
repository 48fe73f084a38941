"""Checkpoints: Lightning's ModelCheckpoint, with last.ckpt written at most every few seconds.

last.ckpt exists for `resume=<run>`. Written after every epoch it is a full model + optimizer
write per epoch, which on a study of many short epochs (digits: 30 epochs of 0.3 s) is a cost
with no use: every random stream of an epoch is a function of (seed, epoch), so a run resumed
from an older last.ckpt still ends exactly like an uninterrupted one, it only repeats the
epochs since. So last.ckpt is refreshed when `last_every_s` seconds have passed since the
previous write, after the final epoch, and on an exception (Ctrl-C). The best checkpoint
(what the test evaluates) is written whenever the monitored metric improves, as before.
"""

from __future__ import annotations

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
        self._always = False  # an exception or the end of training: write regardless of the clock

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        final = trainer.should_stop or (trainer.max_epochs is not None and trainer.max_epochs >= 0
                                        and trainer.current_epoch + 1 >= trainer.max_epochs)
        due = time.monotonic() - self._last_written >= self.last_every_s
        if not (self._always or final or due):
            return
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_written = time.monotonic()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._always = True
        try:
            super().on_exception(trainer, pl_module, exception)
        finally:
            self._always = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._always = True
        try:
            super().on_train_end(trainer, pl_module)
        finally:
            self._always = False
