"""Supervised classification: cross-entropy, top-1/top-k accuracy, best-so-far val/top1."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from lab.errors import ConfigError
from lab.metrics.accuracy import TopKAccuracy
from lab.metrics.epoch_mean import EpochMean
from lab.metrics.top_k import reported_top_k
from lab.tasks.base import Task
from lab.tasks.schedulers import build_optimizer


class SquaredErrorLoss(nn.Module):
    """Squared error between softmax(logits) and the one-hot target.

    `reduction="sum"`: summed over classes (the per-sample SSE), averaged over the
    batch so the loss scale does not depend on the batch size; `"mean"`: also averaged
    over classes (MSE = SSE / num_classes)."""

    def __init__(self, reduction: str) -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=1)
        onehot = torch.nn.functional.one_hot(target, probs.shape[1]).to(probs.dtype)
        per_sample = (probs - onehot).pow(2).sum(dim=1)
        if self.reduction == "mean":
            per_sample = per_sample / probs.shape[1]
        return per_sample.mean()


def make_loss(kind: str, label_smoothing: float = 0.0) -> nn.Module:
    """task.loss: cross_entropy (with label smoothing), sse or mse (softmax vs one-hot)."""
    if kind == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if kind in ("sse", "mse"):
        if label_smoothing:
            raise ConfigError(f"task.label_smoothing applies to cross_entropy, not task.loss={kind}")
        return SquaredErrorLoss("sum" if kind == "sse" else "mean")
    raise ConfigError(f"task.loss must be cross_entropy, sse or mse, got {kind!r}")


class ClassificationTask(Task):
    """Wraps any nn.Module that maps images to class logits.

    `optimizer` is a partial taking the parameters; `scheduler` a partial taking the
    optimizer (or None). Metric keys: {train,val,test}/{loss,top1,top<k>}, <objective>_best,
    train/lr. Accuracies are micro averages (fraction of samples) in [0, 1]. top<k> is
    task.top_k (5), lowered below the number of classes or left out (reported_top_k).
    validation_step and test_step return predictions and targets, which callbacks
    (the confusion matrix) read without a second forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        num_classes: int,
        scheduler: Callable[..., Any] | None = None,
        class_names: Sequence[str] | None = None,
        label_smoothing: float = 0.0,
        top_k: int = 5,
        objective: Any = None,
        channels_last: bool = False,
        loss: str = "cross_entropy",
    ) -> None:
        super().__init__(objective)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ConfigError(f"task.label_smoothing must be in [0, 1), got {label_smoothing}")
        top_k_used = reported_top_k(top_k, num_classes)  # None: top-1 only
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"], logger=False)
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.criterion = make_loss(loss, float(label_smoothing))
        self.top_k = top_k_used or 1
        self.channels_last = bool(channels_last)

        # top-1 and top-k accuracy (micro averages) from one topk per batch
        self.train_acc = TopKAccuracy((1, self.top_k), prefix="train/")
        self.val_acc = TopKAccuracy((1, self.top_k), prefix="val/")
        self.test_acc = TopKAccuracy((1, self.top_k), prefix="test/")
        # val/test loss as a sample-weighted mean whose sums are synced across DDP processes:
        # with each sample on exactly one rank, N processes give the single-process value.
        # The epoch means of `track` ({split}/loss, ...), made on first use on the task's device
        # (metric states are not checkpointed).
        self._means: dict[str, EpochMean] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str, metrics: TopKAccuracy):
        x, y = batch
        if self.channels_last:  # NHWC: faster convolutions on CPU (oneDNN) and tensor-core GPUs
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self(x)
        loss = self.criterion(logits, y)
        metrics.update(logits.detach(), y)
        self.track(f"{split}/loss", loss, len(y))
        return loss, logits, y

    # --- epoch metrics ----------------------------------------------------------------
    # Steps only add their tensors to device-side sums (torchmetrics states): no host sync,
    # and no Lightning `self.log` per step. Each epoch's values are computed once (synced
    # across DDP processes), logged and reset in the epoch-end hooks.
    def track(self, key: str, value: torch.Tensor, weight: int) -> None:
        """Adds one batch's `value`, weighted by its `weight` samples, to the epoch mean `key`."""
        metric = self._means.get(key)
        if metric is None:
            metric = self._means[key] = EpochMean().to(self.device)
        value = value.detach()
        if value.ndim:  # each element weighs `weight`: as their mean, weighing them all
            value, weight = value.float().mean(), weight * value.numel()
        metric.update(value, weight)

    def running_mean(self, key: str) -> float | None:
        """This process's mean of `key` so far this epoch (no DDP sync: for the progress bar)."""
        metric = self._means.get(key)
        if metric is None or not metric.update_called:
            return None
        return float(metric.total / metric.weight)

    def log_epoch_metrics(self, split: str, metrics: TopKAccuracy | None = None) -> dict[str, torch.Tensor]:
        """Logs, then resets, the epoch means named `{split}/...` and the accuracies `metrics`;
        returns what it logged."""
        logged: dict[str, torch.Tensor] = {}
        for key, metric in self._means.items():
            if key.startswith(f"{split}/") and isinstance(metric, EpochMean) and metric.update_called:
                logged[key] = metric.compute()
                metric.reset()
        if metrics is not None and metrics.update_called:
            logged.update(metrics.compute())
            metrics.reset()
        for key, value in logged.items():
            self.log(key, value, prog_bar=key in ("train/loss", "val/top1"))
        return logged

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._shared_step(batch, "train", self.train_acc)
        return loss

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        _, logits, y = self._shared_step(batch, "val", self.val_acc)
        return {"preds": logits.argmax(dim=1), "target": y}

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        _, logits, y = self._shared_step(batch, "test", self.test_acc)
        return {"preds": logits.argmax(dim=1), "target": y}

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor | None]:
        """Class probabilities (float32 even under bf16) and the batch's labels, for lab.predict's rows."""
        x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return {"probs": self(x).float().softmax(dim=1), "target": y}

    def on_train_epoch_start(self) -> None:
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        # Equal on every DDP process, so not synced: a synced value is reduced lazily, by whoever
        # reads the metrics first, and rank 0's progress bar reads them alone.
        self.log("train/lr", float(lr), on_step=False, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        self.record_best(self.log_epoch_metrics("val", self.val_acc))

    def on_train_epoch_end(self) -> None:
        self.log_epoch_metrics("train", self.train_acc)

    def on_test_epoch_end(self) -> None:
        self.log_epoch_metrics("test", self.test_acc)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.optimizer_factory, self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        # Schedules that take `steps_per_epoch` (warmup_cosine) are stepped every
        # optimizer step for a smooth curve; the rest once per epoch.
        interval, kwargs = "epoch", {}
        func = getattr(self.scheduler_factory, "func", self.scheduler_factory)
        if "steps_per_epoch" in inspect.signature(func).parameters and (self.trainer.max_epochs or 0) > 0:
            steps = self.trainer.estimated_stepping_batches / self.trainer.max_epochs
            interval, kwargs = "step", {"steps_per_epoch": max(1, int(round(steps)))}
        scheduler = self.scheduler_factory(optimizer=optimizer, **kwargs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler, "monitor": self.objective.metric, "interval": interval, "frequency": 1
            },
        }
