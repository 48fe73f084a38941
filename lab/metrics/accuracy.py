"""Top-1 and top-k accuracy from one `topk` per batch.

torchmetrics' MulticlassAccuracy builds per-class statistics for every k separately (a
one-hot and a scatter per metric and batch); a training step only needs "is the label among
the k highest logits", for k = 1 and k = top_k. Here one `topk` answers both, and the state is
integer sums (samples whose label came j-th, samples), summed across DDP processes: the micro
average, the fraction of samples, exactly as MulticlassAccuracy(average="micro") reports it.
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
        # hits[j]: samples whose label came (j + 1)-th; top-k hits are the sum of the first k
        self.add_state("hits", default=torch.zeros(self.ks[-1], dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        # A handful of small ops, added in place (no nn.Module attribute assignment): this runs
        # every training step.
        kmax = min(self.ks[-1], logits.shape[1])
        top = logits.topk(kmax, dim=1).indices if kmax > 1 else logits.argmax(dim=1, keepdim=True)
        self.hits[:kmax].add_((top == target[:, None]).sum(dim=0))  # a label appears at most once among the top k
        self.total.add_(target.numel())

    def compute(self) -> dict[str, torch.Tensor]:
        values = self.hits.cumsum(dim=0).float() / self.total.clamp(min=1)
        return {f"{self.prefix}top{k}": values[k - 1] for k in self.ks}
