"""Metric learning: batch-hard triplet loss (+ cross-entropy), trained in two stages.

Stage 1 (`stage1_epochs`): the classifier is frozen and the feature extractor learns
from `triplet_weight * triplet + ce_weight * cross-entropy` (the CE term, if any,
goes through the frozen classifier). Stage 2 (the remaining epochs): the features are
frozen (BatchNorm statistics included) and only the classifier learns, with
cross-entropy. `stage1_epochs: 0` trains everything jointly on the weighted sum;
`triplet_weight: 0, ce_weight: 1, stage1_epochs: 0` is the plain cross-entropy
baseline with the same retrieval metrics.

Besides top-1/top-k, validation and test log retrieval metrics on the penultimate
features (lab.metrics.retrieval, same distance as the loss): precision_at_1,
recall_at_{1,5,10}, map_at_r.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lab.errors import ConfigError
from lab.metrics.retrieval import check_distance, retrieval_metrics
from lab.tasks.classification import ClassificationTask


def pairwise_distances(x: torch.Tensor, distance: str) -> torch.Tensor:
    """[N, N] distances: 1 - cosine similarity, or Euclidean (with a gradient-safe sqrt).

    In fp32 (fp64 stays), autocast or not: in bf16, |a|^2 + |b|^2 - 2ab and 1 - cos are off by
    more than the gaps hard-example mining ranks by."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16/fp16 up, fp64 kept
        if distance == "cosine":
            x = nn.functional.normalize(x, dim=1)
            return 1.0 - x @ x.T
        sq = x.pow(2).sum(dim=1)
        d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_min(0.0)
        return d2.clamp_min(1e-12).sqrt() * (d2 > 0)


def batch_hard_triplet_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float, distance: str = "cosine"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over anchors of max(0, d(a, hardest positive) - d(a, hardest negative) + margin)
    (Hermans et al., 2017). Anchors without a positive or a negative in the batch are
    skipped; with none left the loss is 0 (still in the graph, gradient 0). Returns (loss,
    fraction of counted anchors with a non-zero loss), in fp32 or wider.

    Masked, not indexed: no branch on a tensor value and no data-dependent shape, so it
    makes no host sync on a GPU and compiles as one graph."""
    d = pairwise_distances(embeddings, distance)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos, neg = same & ~eye, ~same
    hardest_pos = d.masked_fill(~pos, float("-inf")).amax(dim=1)
    hardest_neg = d.masked_fill(~neg, float("inf")).amin(dim=1)
    valid = pos.any(dim=1) & neg.any(dim=1)
    # where, not a product: a skipped anchor's +-inf never reaches the loss or its gradient
    per_anchor = torch.relu(torch.where(valid, hardest_pos - hardest_neg + margin, 0.0))
    counted = valid.sum().clamp_min(1)
    active = (per_anchor > 0).sum() / counted  # skipped anchors are 0, never active
    return per_anchor.sum() / counted, active.float().detach()


def _model_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """model.features(x) with the model as an argument: what compile_model compiles, so a copy
    of the task runs its own model (a compiled bound method would keep the original's)."""
    return model.features(x)


def find_classifier(model: nn.Module, num_classes: int) -> str:
    """Name of the last nn.Linear with `num_classes` outputs: the layer that maps the
    model's `features(x)` to logits in every lab model."""
    found = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not found or not hasattr(model, "features"):
        raise ConfigError(f"task=metric_learning needs a model with features(x) and a final Linear layer "
                          f"to {num_classes} classes; {type(model).__name__} has none")
    return found[-1]


class MetricLearningTask(ClassificationTask):
    """Triplet (+ CE) on the penultimate features, then CE on the classifier.

    Logs train/triplet_loss, train/ce_loss, train/active_triplets, train/stage, and
    {val,test}/{precision_at_1, recall_at_1, recall_at_5, recall_at_10, map_at_r}."""

    # Each stage leaves a part of the model without gradients (the frozen classifier, the
    # frozen features): DDP must look for unused parameters (lab.build switches it on).
    ddp_unused_parameters = True

    def __init__(
        self,
        *args: Any,
        distance: str = "cosine",
        margin: float = 0.2,
        triplet_weight: float = 1.0,
        ce_weight: float = 0.0,
        stage1_epochs: int = 0,
        recall_ks: tuple[int, ...] = (1, 5, 10),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.distance = check_distance(distance)
        except ValueError as err:
            raise ConfigError(f"task.{err}") from None
        if float(margin) < 0:
            raise ConfigError(f"task.margin must be >= 0, got {margin}")
        if float(triplet_weight) < 0 or float(ce_weight) < 0 or float(triplet_weight) + float(ce_weight) == 0:
            raise ConfigError(f"task.triplet_weight ({triplet_weight}) and task.ce_weight ({ce_weight}) must be "
                              ">= 0 and not both 0")
        if int(stage1_epochs) < 0:
            raise ConfigError(f"task.stage1_epochs must be >= 0, got {stage1_epochs}")
        self.margin = float(margin)
        self.triplet_weight = float(triplet_weight)
        self.ce_weight = float(ce_weight)
        self.stage1_epochs = int(stage1_epochs)
        self.recall_ks = tuple(int(k) for k in recall_ks)
        # A name, not a second reference: the checkpoint keeps one key per weight.
        self.classifier_name = find_classifier(self.model, self.num_classes)
        self._features: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        # torch.compile'd `_model_features` once compile_model ran: a plain attribute, so
        # neither a parameter, nor a state_dict key, nor a hyperparameter.
        self._compiled_features: Any = None

    @property
    def classifier(self) -> nn.Module:
        return self.model.get_submodule(self.classifier_name)

    # --- stages ----------------------------------------------------------------------
    @property
    def stage(self) -> int:
        """0: joint training (stage1_epochs=0); 1: features learn; 2: classifier learns."""
        if self.stage1_epochs == 0:
            return 0
        return 1 if self.current_epoch < self.stage1_epochs else 2

    def on_fit_start(self) -> None:
        max_epochs = self.trainer.max_epochs or 0
        if self.stage1_epochs and not self.trainer.fast_dev_run and self.stage1_epochs >= max_epochs:
            raise ConfigError(f"task.stage1_epochs={self.stage1_epochs} leaves no epoch for stage 2 within "
                              f"trainer.max_epochs={max_epochs}; raise max_epochs or lower stage1_epochs")

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        stage = self.stage
        classifier_params = set(self.classifier.parameters())
        for param in self.model.parameters():
            in_classifier = param in classifier_params
            param.requires_grad_(stage == 0 or (stage == 1) != in_classifier)
        self.log("train/stage", float(stage), on_step=False, on_epoch=True)  # equal on all ranks

    # --- steps -----------------------------------------------------------------------
    def compile_model(self, **compile_kwargs: Any) -> None:
        """What trainer.compile=true means here: torch.compile the features() every step runs
        (nn.Module.compile covers forward() only, which metric learning never calls), and the
        model's forward for prediction. Compiled lazily, at the first call; the parameters,
        their names and the checkpoint stay those of the plain model."""
        self._compiled_features = torch.compile(_model_features, **compile_kwargs)
        self.model.compile(**compile_kwargs)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._compiled_features is not None:
            return self._compiled_features(self.model, x)
        return self.model.features(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.stage == 2:  # frozen features: eval mode (BatchNorm stats, dropout) and no graph
            self.model.eval()
            with torch.no_grad():
                feats = self._embed(x)
            self.classifier.train()
            logits = self.classifier(feats)
            loss = self.criterion(logits, y)
            self.track("train/ce_loss", loss, len(y))
        else:
            feats = self._embed(x)
            logits = self.classifier(feats)
            triplet, active = batch_hard_triplet_loss(feats, y, self.margin, self.distance)
            ce = self.criterion(logits, y)
            loss = self.triplet_weight * triplet + self.ce_weight * ce
            for key, value in (("triplet_loss", triplet), ("active_triplets", active), ("ce_loss", ce)):
                self.track(f"train/{key}", value, len(y))
        self.train_acc.update(logits.detach(), y)
        self.track("train/loss", loss, len(y))
        return loss

    def _eval_step(self, batch, split: str, metrics) -> dict[str, torch.Tensor]:
        x, y = batch
        feats = self._embed(x)
        logits = self.classifier(feats)
        loss = self.criterion(logits, y)
        metrics.update(logits.detach(), y)
        self.track(f"{split}/loss", loss, len(y))
        # kept on the device (a copy to the host per batch would wait for the GPU each time)
        self._features.setdefault(split, []).append((feats.detach().float(), y.detach()))
        return {"preds": logits.argmax(dim=1), "target": y}

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "test", self.test_acc)

    def _log_retrieval(self, split: str) -> None:
        parts = self._features.pop(split, [])
        if not parts:
            return
        feats = torch.cat([f for f, _ in parts])
        labels = torch.cat([y for _, y in parts])
        if self.trainer.world_size > 1:
            from lab.train.distributed import gather_shards

            feats, labels = gather_shards(feats, self.device), gather_shards(labels, self.device)
        if len(feats) < 2:
            return
        # One copy to the host per epoch; ranked in fp32 on the CPU (no TF32): the same figures on any device.
        values = retrieval_metrics(feats.cpu(), labels.cpu(), ks=self.recall_ks, distance=self.distance)
        for key, value in values.items():
            self.log(f"{split}/{key}", value, prog_bar=key == "map_at_r" and split == "val", sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_retrieval("val")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_retrieval("test")

    # --- optimisation --------------------------------------------------------------
    def configure_optimizers(self):
        """One optimizer over all parameters (frozen ones get no gradient, so neither a
        step nor weight decay); a warmup-cosine schedule restarts at the stage switch."""
        config = super().configure_optimizers()
        if self.stage1_epochs == 0 or not isinstance(config, dict):
            return config
        sched_cfg = config["lr_scheduler"]
        if sched_cfg["interval"] != "step":  # epoch-based schedules run over the whole fit
            return config
        optimizer = config["optimizer"]
        steps_per_epoch = max(1, int(round(self.trainer.estimated_stepping_batches / self.trainer.max_epochs)))
        stage1 = self.stage1_epochs
        stage2 = max(int(self.trainer.max_epochs) - stage1, 1)
        first = self.scheduler_factory(optimizer=optimizer, steps_per_epoch=steps_per_epoch, max_epochs=stage1)
        second = self.scheduler_factory(optimizer=optimizer, steps_per_epoch=steps_per_epoch, max_epochs=stage2)
        f1, f2 = first.lr_lambdas[0], second.lr_lambdas[0]
        boundary = stage1 * steps_per_epoch

        def staged(step: int) -> float:
            return f1(step) if step < boundary else f2(step - boundary)

        for group in optimizer.param_groups:  # undo the lr the throw-away schedulers set
            group["lr"] = group["initial_lr"]
        sched_cfg["scheduler"] = torch.optim.lr_scheduler.LambdaLR(optimizer, staged)
        return config
