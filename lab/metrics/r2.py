"""R^2 of several outputs: each output's own R^2, then their mean (sklearn's default).

Flattening [N, k] predictions into one vector measures every output against the mean of
all of them: two outputs with different offsets then explain each other's offset, and R^2
came out 0.999999 where sklearn's r2_score gives 0.496. Here, per output j,
R^2_j = 1 - SS_res_j / SS_tot_j, and the reported value is their uniform average
(r2_score's multioutput="uniform_average", force_finite=True).

The state is per-output sums (n, sum y, sum y^2, sum of squared residuals) in float64,
added on the device and summed across DDP processes like the other epoch metrics, so a
split streamed in batches, or sharded over processes, gives the one-batch value.
SS_tot = sum y^2 - (sum y)^2 / n loses nothing that matters in float64.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class R2Score(Metric):
    """compute() -> mean over outputs of 1 - SS_res / SS_tot; NaN with fewer than 2 samples."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self) -> None:
        super().__init__()
        # Sized by the first update (the task does not know its model's outputs before a batch).
        for name in ("sum_y", "sum_y2", "sse"):
            self.add_state(name, default=torch.zeros(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """`preds` and `target` of one shape: [N] (one output) or [N, k, ...] (k... outputs)."""
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must have one shape")
        y = target.detach().reshape(len(target), -1).double()
        residual = preds.detach().reshape(len(preds), -1).double() - y
        if self.sum_y.numel() == 0:  # first batch since reset; float64 even after a module-wide .to(dtype)
            for name in ("sum_y", "sum_y2", "sse"):
                setattr(self, name, torch.zeros(y.shape[1], dtype=torch.float64, device=y.device))
            self.n = torch.zeros((), dtype=torch.float64, device=y.device)
        elif self.sum_y.numel() != y.shape[1]:
            raise ValueError(f"R^2 got {y.shape[1]} outputs after {self.sum_y.numel()} in earlier batches")
        self.sum_y.add_(y.sum(dim=0))
        self.sum_y2.add_(y.pow(2).sum(dim=0))
        self.sse.add_(residual.pow(2).sum(dim=0))
        self.n.add_(len(y))

    def _sync_dist(self, dist_sync_fn=None, process_group=None) -> None:
        """Sizes a process that saw no batch like the others, then sums the states across processes."""
        from torchmetrics.utilities.distributed import gather_all_tensors

        dist_sync_fn = dist_sync_fn or gather_all_tensors
        size = torch.tensor(self.sum_y.numel(), device=self.n.device)
        outputs = max(int(s) for s in dist_sync_fn(size, group=process_group or self.process_group))
        if self.sum_y.numel() == 0 and outputs:
            for name in ("sum_y", "sum_y2", "sse"):
                setattr(self, name, torch.zeros(outputs, dtype=torch.float64, device=self.n.device))
            self.n = self.n.double()
        super()._sync_dist(dist_sync_fn, process_group)

    def compute(self) -> torch.Tensor:
        if self.n < 2 or self.sum_y.numel() == 0:
            return torch.tensor(float("nan"), device=self.n.device)
        sst = self.sum_y2 - self.sum_y.pow(2) / self.n
        # A spread below 1e-6 of the values (8 float32 steps) is rounding: a constant output. It
        # scores as sklearn's force_finite does: 1 when predicted exactly, else 0.
        constant = sst <= 1e-12 * self.sum_y2
        per_output = torch.where(constant, (self.sse == 0).double(), 1 - self.sse / sst.where(~constant, 1.0))
        return per_output.mean().float()
