"""Top-1 and top-k accuracy with one tie rule: argmax's.

A label's rank is the number of classes ahead of it, ties going to the lower class index, as
`torch.argmax` breaks them. Top-1 is therefore exactly `argmax == label`: the rule of the
confusion matrix, lab.predict and torchmetrics' MulticlassAccuracy(top_k=1), and the argmax
class is always within the top k. `topk(k)[:, 0]` is not: torch orders tied values
arbitrarily (on CPU often not the first), so all-zero or bf16-rounded logits gave a top-1
that disagreed with the confusion matrix and torchmetrics.

The state is integer sums (samples whose label is within the top k, for each k; samples),
summed across DDP processes: the micro average, the fraction of samples, as
MulticlassAccuracy(average="micro") reports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


class TopKAccuracy(Metric):
    """compute() -> {f"{prefix}top{k}": fraction of samples whose label is in the top k}."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, ks: Sequence[int] = (1, 5), prefix: str = "") -> None:
        super().__init__()
        self.ks = tuple(sorted({int(k) for k in ks}))
        if not self.ks or self.ks[0] < 1:
            raise ValueError(f"top-k accuracy needs k >= 1, got {tuple(ks)}")
        self.prefix = prefix
        # hits[i]: samples whose label is within the top ks[i]
        self.add_state("hits", default=torch.zeros(len(self.ks), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self._consts: dict = {}  # (classes, device) -> (class indices, ks), made once

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        # A handful of small elementwise ops, added in place (no nn.Module attribute assignment):
        # this runs every training step.
        consts = self._consts.get((logits.shape[1], logits.device))
        if consts is None:
            consts = self._consts[(logits.shape[1], logits.device)] = (
                torch.arange(logits.shape[1], device=logits.device), torch.tensor(self.ks, device=logits.device))
        cols, ks = consts
        y = target[:, None]
        label = logits.gather(1, y)
        rank = ((logits > label) | ((logits == label) & (cols < y))).sum(dim=1)  # classes ahead of the label
        # argmax decides rank 0, so top-1 is argmax's also with NaN logits (which argmax takes as the largest)
        rank = torch.where(logits.argmax(dim=1) == target, 0, rank.clamp(min=1))
        self.hits.add_((rank[:, None] < ks).sum(dim=0))
        self.total.add_(target.numel())

    def compute(self) -> dict[str, torch.Tensor]:
        values = self.hits.float() / self.total.clamp(min=1)
        return {f"{self.prefix}top{k}": values[i] for i, k in enumerate(self.ks)}
