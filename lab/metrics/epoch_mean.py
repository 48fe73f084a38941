"""A sample-weighted mean of per-batch values (the epoch's loss), with no host sync per step.

torchmetrics' MeanMetric checks every value for NaN (`.any()` on the device: a host sync per
step on a GPU); with that check disabled (nan_strategy="disable", torchmetrics 1.9) it also
drops the weights and averages batches, not samples. Here the state is two sums, summed
across DDP processes, so N processes report exactly the one-process value. Non-finite losses
are the FiniteLossCheck callback's business.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class EpochMean(Metric):
    full_state_update = False
    is_differentiable = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: int | float | torch.Tensor = 1) -> None:
        """Adds `value`'s elements, each weighing `weight`: a number, or a tensor that broadcasts
        to value's shape (per-element weights)."""
        # in place (no nn.Module attribute assignment)
        value = value.detach().float()
        if isinstance(weight, torch.Tensor):
            weight = torch.broadcast_to(weight.to(device=value.device, dtype=value.dtype), value.shape)
            self.total.add_((value * weight).sum())
            self.weight.add_(weight.sum())
            return
        self.total.add_(value.sum() if value.ndim else value, alpha=weight)
        self.weight.add_(weight * value.numel())

    def compute(self) -> torch.Tensor:
        return self.total / self.weight
