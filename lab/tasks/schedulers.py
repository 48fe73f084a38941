"""Optimizer construction and learning-rate schedules torch does not ship as one class."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from lab.errors import ConfigError


def build_optimizer(factory: Callable[..., torch.optim.Optimizer], params: Iterable) -> torch.optim.Optimizer:
    """Call the optimizer partial from the config with the model's parameters; refuse lr <= 0."""
    optimizer = factory(params=params)
    for group in optimizer.param_groups:
        if group["lr"] <= 0:
            raise ConfigError(f"optimizer.lr must be positive, got {group['lr']}")
    return optimizer


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    max_epochs: int,
    warmup_epochs: int = 0,
    warmup_start_factor: float = 0.1,
    min_lr_ratio: float = 0.0,
    steps_per_epoch: int = 1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the base lr over `warmup_epochs` (at most a tenth of
    `max_epochs`), then cosine decay to `min_lr_ratio * lr` at `max_epochs`.

    With `steps_per_epoch` > 1 it is meant to be stepped after every optimizer step
    (the task does so), and the curve is smooth within epochs."""
    max_epochs, warmup_epochs = int(max_epochs), int(warmup_epochs)
    if max_epochs <= 0:
        raise ValueError(f"scheduler.max_epochs must be positive, got {max_epochs}")
    if warmup_epochs < 0:
        raise ValueError(f"scheduler.warmup_epochs must be >= 0, got {warmup_epochs}")
    # Warmup never takes more than a tenth of the run, so the default (2 epochs) still
    # leaves a decay when a run is shortened to 1 or 2 epochs.
    warmup = min(float(warmup_epochs), 0.1 * max_epochs)

    steps_per_epoch = max(int(steps_per_epoch), 1)

    def factor(step: int) -> float:
        epoch = step / steps_per_epoch
        if epoch < warmup:
            return warmup_start_factor + (1.0 - warmup_start_factor) * epoch / warmup
        span = max(max_epochs - warmup, 1e-9)
        progress = min((epoch - warmup) / span, 1.0)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
