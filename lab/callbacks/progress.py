"""The console progress bar: Lightning's rich bar, redrawn a few times a second, not every batch.

Lightning's RichProgressBar renders the whole bar twice after every training batch and reads
every progress-bar metric with `.item()`; at 15-60 ms per batch on 2 CPU cores that is a
per-cent or two of the epoch, and on a GPU each read is a host sync. This bar redraws at most
`redraws_per_second` times (and after the last batch of an epoch), and shows the running mean
of this epoch's train loss read from the task's device-side sums only when it redraws.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    def __init__(self, redraws_per_second: float = 4.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if redraws_per_second <= 0:
            raise ValueError(f"callbacks.progress_bar.redraws_per_second must be > 0, got {redraws_per_second}")
        self.interval = 1.0 / float(redraws_per_second)
        self._last_redraw = float("-inf")
        self._epoch_batches: int | float = 0  # this epoch's train batches, read once at its start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._last_redraw = float("-inf")
        self._epoch_batches = self.total_train_batches

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.monotonic()
        # cheapest test first: this runs after every batch
        if now - self._last_redraw < self.interval and batch_idx + 1 < self._epoch_batches \
                and self.train_progress_bar_id is not None and self.is_enabled:
            return  # the bar's count is absolute (completed=batch), so skipped batches lose nothing
        self._last_redraw = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        running = getattr(pl_module, "running_mean", None)
        if trainer.training and callable(running):
            value = running("train/loss")
            if value is not None:
                items["train/loss"] = value
        return items
