"""What every lab task shares: a LightningModule that names its objective and tracks its best.

The objective (`task.objective`, lab/config/objective.py: a logged validation metric and
max or min) is what the checkpoint keeps, what a plateau schedule watches, what a sweeper
optimises and what lab.report ranks by. A task hands its validation values to
`record_best` each validation epoch, which logs `<metric>_best` and remembers the epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torchmetrics import MaxMetric, MinMetric

from lab.config.objective import Objective
from lab.errors import ConfigError


class Task(L.LightningModule):
    # What `trainer.precision: auto` becomes for this task on a CUDA device; None: the device's
    # mixed precision (bf16, fp16 before Ampere). Read from the class before the Trainer exists.
    auto_precision: str | None = None

    def __init__(self, objective: Mapping[str, Any] | Objective | None = None) -> None:
        super().__init__()
        self.objective = Objective.of(objective)
        # A Max/MinMetric: its value travels in checkpoints through lab.callbacks.determinism.
        self.objective_best = MaxMetric() if self.objective.mode == "max" else MinMetric()
        self.best_epoch: int | None = None  # epoch of the best objective value (metrics.json: best_epoch)

    def on_train_start(self) -> None:
        # The sanity-check validation must not count towards the best score.
        self.objective_best.reset()

    def epoch_position(self) -> int:
        """The epoch a validation belongs to, as metrics.json's best_epoch counts it."""
        return self.current_epoch

    def record_best(self, values: Mapping[str, Any]) -> None:
        """Updates and logs `<objective>_best` from this validation epoch's `values` (metric -> value)."""
        metric = self.objective.metric
        if metric not in values:
            raise ConfigError(f"task.objective.metric={metric} is not a metric {type(self).__name__} logs; "
                              f"choose one of {', '.join(sorted(values))}")
        value = torch.as_tensor(values[metric], dtype=torch.float32, device=self.device)
        if not self.trainer.sanity_checking and (
            self.best_epoch is None or self.objective.better(float(value), float(self.objective_best.compute()))
        ):
            self.best_epoch = self.epoch_position()
        self.objective_best.update(value)
        # equal on every rank (computed from synced metrics): not synced again
        self.log(self.objective.best_key, self.objective_best.compute(), prog_bar=True)
