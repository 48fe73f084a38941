"""Top-1 and top-k accuracy from one `topk` per batch.

torchmetrics' MulticlassAccuracy builds per-class statistics for every k separately (a
one-hot and a scatter per metric and batch); a training step only needs "is the label among
the k highest logits", for k = 1 and k = top_k. Here one `topk` answers both, and the state is
two integer sums (hits per k, samples), summed across DDP processes: the micro average, the
fraction of samples, exactly as MulticlassAccuracy(average="micro") reports it.
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
        self.add_state("hits", default=torch.zeros(len(self.ks), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        kmax = min(self.ks[-1], logits.shape[1])
        top = logits.topk(kmax, dim=1).indices if kmax > 1 else logits.argmax(dim=1, keepdim=True)
        # hit within the first j + 1 guesses: a label appears at most once among the top k
        within = (top == target[:, None]).cumsum(dim=1)
        self.hits += torch.stack([within[:, min(k, kmax) - 1] for k in self.ks], dim=1).sum(dim=0)
        self.total += target.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        values = self.hits.float() / self.total.clamp(min=1)
        return {f"{self.prefix}top{k}": values[i] for i, k in enumerate(self.ks)}
