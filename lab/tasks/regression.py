"""Full-batch regression (function fitting): MSE loss, val/test MSE and R^2, best-so-far val/mse.

What an epoch is here. The data is one full batch, so a study epoch is one optimizer
step on all training points, and studies run tens of thousands of them. Lightning
costs milliseconds per epoch (its loops, hooks, logging, progress bar), which is
more than such a step, so one study epoch must not be one Lightning epoch. The task
runs `chunk` study epochs as a tight loop inside one training_step (manual
optimization, no per-step logging or host syncs), and translates
`trainer.max_epochs`, which stays in study epochs, into ceil(max_epochs / chunk)
Lightning epochs when fitting starts. Validation, logged scalars, checkpoints and
the function plots therefore happen every `chunk` study epochs.

`trainer.global_step` counts optimizer steps, so it equals the study epochs done; it
is the x-axis of every logged scalar (the task logs `step` and `epoch` with it) and
the number lab.run reports as `epochs`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanSquaredError, MetricCollection

from lab.errors import ConfigError
from lab.metrics.r2 import R2Score
from lab.tasks.base import Task
from lab.tasks.schedulers import build_optimizer

MONITORS = ("val/mse", "val/r2")  # what task.objective.metric may name


class RegressionTask(Task):
    """Wraps any nn.Module mapping x [N, d] to y [N, k], trained full-batch.

    `optimizer` is a partial taking the parameters; `scheduler` a partial taking the
    optimizer (or None): a ReduceLROnPlateau is stepped after each validation on the
    objective, any other schedule after every study epoch. Metric keys:
    train/mse (of the last step in each chunk), train/lr, val/mse, val/r2,
    <objective>_best (val/mse_best), test/mse, test/r2. R^2 is 1 - SS_res / SS_tot over the split,
    per output, averaged over outputs (sklearn's r2_score; lab.metrics.r2). MSE is averaged over
    samples and outputs.
    """

    # Fitting a function to 1e-5 needs fp32: bf16 is 0.25 apart near 47 (f2's values), which
    # would floor val/mse near 1e-3 on a GPU and make GPU and CPU results incomparable.
    auto_precision = "32-true"

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        chunk: int = 250,
        objective: Any = None,
    ) -> None:
        super().__init__(objective if objective is not None else {"metric": "val/mse", "mode": "min"})
        if int(chunk) < 1:
            raise ConfigError(f"task.chunk must be a positive number of epochs, got {chunk}")
        if self.objective.metric not in MONITORS:
            raise ConfigError(f"task.objective.metric must be one of {', '.join(MONITORS)} for regression, "
                              f"got {self.objective.metric!r}")
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"], logger=False)
        self.automatic_optimization = False
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.chunk = int(chunk)
        self.criterion = nn.MSELoss()
        self.val_metrics = MetricCollection({"mse": MeanSquaredError(), "r2": R2Score()}, prefix="val/")
        self.test_metrics = self.val_metrics.clone(prefix="test/")
        self.max_study_epochs: int | None = None
        self._translated_for: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def epochs_completed(self) -> int:
        """Study epochs (full-batch optimizer steps) done so far."""
        try:
            return int(self.trainer.global_step)
        except RuntimeError:  # not attached to a Trainer yet
            return 0

    def epoch_position(self) -> int:
        return self.epochs_completed

    # --- epochs: study -> Lightning ----------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage != "fit" or self._translated_for == id(self.trainer):
            return
        # The hot loop calls backward() and the torch optimizer directly (see training_step), so
        # neither a gradient scaler (16-bit mixed precision) nor gradient sync across devices runs.
        if "16-mixed" in str(self.trainer.precision) and "bf16" not in str(self.trainer.precision):
            raise ConfigError(f"task=regression does not support trainer.precision={self.trainer.precision}; "
                              "use 32-true or bf16-mixed")
        if self.trainer.world_size > 1:
            raise ConfigError("task=regression trains full-batch on one device; set trainer.devices=1")
        loop = self.trainer.fit_loop
        if loop.max_epochs is None or loop.max_epochs < 1:
            raise ConfigError(f"trainer.max_epochs must be a positive number of epochs (full-batch steps), "
                              f"got {loop.max_epochs}")
        self.max_study_epochs = int(loop.max_epochs)
        loop.max_epochs = math.ceil(self.max_study_epochs / self.chunk)
        if loop.min_epochs:
            loop.min_epochs = math.ceil(loop.min_epochs / self.chunk)
        self._translated_for = id(self.trainer)

    def _steps_this_chunk(self) -> int:
        left = (self.max_study_epochs or 0) - self.epochs_completed
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            left = min(left, self.trainer.max_steps - self.trainer.global_step)
        return max(0, min(self.chunk, left))

    def _log_position(self) -> None:
        # `step` sets the x-axis of what is logged with it; `epoch` replaces Lightning's chunk count,
        # also in the progress bar, whose own "Epoch i/n" counts chunks.
        epochs = float(self.epochs_completed)
        self.log("step", epochs, on_step=False, on_epoch=True)
        self.log("epoch", epochs, on_step=False, on_epoch=True, prog_bar=True)

    # --- steps -------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        steps = self._steps_this_chunk()
        if steps == 0:
            return
        # The torch optimizer itself, not Lightning's wrapper: the wrapper's and
        # manual_backward's hooks cost 0.1-0.2 ms a step, about a tenth of a step here.
        optimizer = self.optimizers().optimizer
        schedule = self._per_epoch_scheduler()
        for _ in range(steps):  # the hot loop: a plain PyTorch step, nothing waits for the host
            optimizer.zero_grad(set_to_none=True)
            loss = self.criterion(self.model(x), y)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
        self._count_steps(steps)
        self.log("train/mse", loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log("train/lr", float(optimizer.param_groups[0]["lr"]), on_step=False, on_epoch=True)
        self._log_position()

    def _count_steps(self, steps: int) -> None:
        """Advance trainer.global_step by the optimizer steps taken outside Lightning's wrapper."""
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        for tracker in (progress.total, progress.current):
            tracker.ready += steps
            tracker.completed += steps

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: MetricCollection) -> torch.Tensor:
        x, y = batch
        pred = self(x)
        # [N, k]: R^2 is per output, never of the outputs flattened into one vector
        metrics.update(pred.detach().reshape(y.shape), y)
        for key, metric in metrics.items():
            self.log(key, metric, on_step=False, on_epoch=True, prog_bar=key == "val/r2")
        return pred

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, self.val_metrics)

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, self.test_metrics)

    def on_validation_epoch_end(self) -> None:
        values = {"val/mse": self.val_metrics["mse"].compute(), "val/r2": self.val_metrics["r2"].compute()}
        self.record_best(values)
        self._log_position()
        scheduler = self.lr_schedulers()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and not self.trainer.sanity_checking:
            scheduler.step(values[self.objective.metric])

    def on_test_epoch_end(self) -> None:
        self._log_position()

    # --- optimizer ---------------------------------------------------------------------
    def _per_epoch_scheduler(self):
        scheduler = self.lr_schedulers()
        if scheduler is None or isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return None
        return scheduler

    def configure_optimizers(self):
        optimizer = build_optimizer(self.optimizer_factory, self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        # Manual optimization: the task steps the schedule itself (per study epoch, or on
        # objective after each validation), so Lightning gets no interval or monitor.
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer=optimizer)}
