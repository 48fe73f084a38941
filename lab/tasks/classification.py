"""Supervised classification: cross-entropy, top-1/top-5 accuracy, best-so-far val/top1."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lab.errors import ConfigError
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


class ClassificationTask(L.LightningModule):
    """Wraps any nn.Module that maps images to class logits.

    `optimizer` is a partial taking the parameters; `scheduler` a partial taking the
    optimizer (or None). Metric keys: {train,val,test}/{loss,top1,top5}, val/top1_best,
    train/lr. Accuracies are micro averages (fraction of samples) in [0, 1].
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
        scheduler_monitor: str = "val/top1",
        channels_last: bool = False,
        loss: str = "cross_entropy",
    ) -> None:
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ConfigError(f"task.label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 1 <= int(top_k) <= num_classes:
            raise ConfigError(f"task.top_k={top_k} must be between 1 and the number of classes ({num_classes})")
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"], logger=False)
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.scheduler_monitor = scheduler_monitor
        self.criterion = make_loss(loss, float(label_smoothing))
        self.top_k = int(top_k)
        self.channels_last = bool(channels_last)

        def accuracies(prefix: str) -> MetricCollection:
            return MetricCollection(
                {
                    # validate_args=False: no per-step checks of the label range (a host sync per step)
                    "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro", validate_args=False),
                    f"top{self.top_k}": MulticlassAccuracy(num_classes, top_k=self.top_k, average="micro",
                                                           validate_args=False),
                },
                prefix=prefix,
            )

        self.train_acc = accuracies("train/")
        self.val_acc = accuracies("val/")
        self.test_acc = accuracies("test/")
        # val/test loss as a sample-weighted mean whose sums are synced across DDP processes:
        # with each sample on exactly one rank, N processes give the single-process value.
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_top1_best = MaxMetric()
        self.best_epoch: int | None = None  # epoch of the best val/top1 (metrics.json: best_epoch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str, metrics: MetricCollection):
        x, y = batch
        if self.channels_last:  # NHWC: faster convolutions on CPU (oneDNN) and tensor-core GPUs
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self(x)
        loss = self.criterion(logits, y)
        metrics.update(logits.detach(), y)
        self.log_loss(split, loss, len(y), prog_bar=split == "train")
        for key, metric in metrics.items():
            self.log(key, metric, on_step=False, on_epoch=True, prog_bar=key == "val/top1")
        return loss, logits, y

    def log_loss(self, split: str, loss: torch.Tensor, batch_size: int, prog_bar: bool = False) -> None:
        """`{split}/loss` for the epoch: val/test through the synced MeanMetric (exact under DDP);
        train as the mean over batches, averaged across processes (equal batches on every rank)."""
        if split == "train":
            self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, prog_bar=prog_bar,
                     batch_size=batch_size, sync_dist=True)
            return
        metric = self.val_loss if split == "val" else self.test_loss
        metric.update(loss.detach().float(), weight=batch_size)
        self.log(f"{split}/loss", metric, on_step=False, on_epoch=True, prog_bar=prog_bar)

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

    def on_train_start(self) -> None:
        # The sanity-check validation must not count towards the best score.
        self.val_top1_best.reset()

    def on_train_epoch_start(self) -> None:
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", float(lr), on_step=False, on_epoch=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        top1 = self.val_acc["top1"].compute()
        if not self.trainer.sanity_checking and (self.best_epoch is None or top1 > self.val_top1_best.compute()):
            self.best_epoch = self.current_epoch
        self.val_top1_best.update(top1)
        self.log("val/top1_best", self.val_top1_best.compute(), prog_bar=True, sync_dist=True)  # equal on all ranks

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
                "scheduler": scheduler, "monitor": self.scheduler_monitor, "interval": interval, "frequency": 1
            },
        }
