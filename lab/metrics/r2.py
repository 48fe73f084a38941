"""R^2 of several outputs: each output's own R^2, then their mean (sklearn's default).

Flattening [N, k] predictions into one vector measures every output against the mean of
all of them: two outputs with different offsets then explain each other's offset, and R^2
came out 0.999999 where sklearn's r2_score gives 0.496. Here, per output j,
R^2_j = 1 - SS_res_j / SS_tot_j, and the reported value is their uniform average
(r2_score's multioutput="uniform_average", force_finite=True).

The state is one row of float64 sums per batch, [k, n, sum y (k), sum y^2 (k), sum of squared
residuals (k)], kept in a list that torchmetrics concatenates across DDP processes ("cat"), so
a split streamed in batches, or sharded over processes (one of which may see no batch),
gives the one-batch value without lab reaching into Metric's private sync.
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
        # Sized by each batch (the task does not know its model's outputs before one).
        self.add_state("rows", default=[], dist_reduce_fx="cat")
        # A process without batches sends an empty tensor of the metric's dtype: float64, like the rows.
        self.set_dtype(torch.float64)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """`preds` and `target` of one shape: [N] (one output) or [N, k, ...] (k... outputs)."""
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must have one shape")
        y = target.detach().reshape(len(target), -1).double()
        residual = preds.detach().reshape(len(preds), -1).double() - y
        # Shapes only (metadata) and device-side fills: an update reads nothing back from the GPU.
        k = y.shape[1]
        if self.rows and self.rows[0].numel() != 2 + 3 * k:
            raise ValueError(f"R^2 got {k} outputs after {(self.rows[0].numel() - 2) // 3} in earlier batches")
        head = torch.cat([y.new_full((1,), k), y.new_full((1,), len(y))])
        self.rows.append(torch.cat([head, y.sum(dim=0), y.pow(2).sum(dim=0), residual.pow(2).sum(dim=0)]))

    def compute(self) -> torch.Tensor:
        flat = torch.cat([r.reshape(-1).double() for r in self.rows]) if isinstance(self.rows, list) and self.rows \
            else torch.as_tensor(self.rows, dtype=torch.float64).reshape(-1)  # a list, or one tensor after a sync
        if flat.numel() == 0:
            return torch.tensor(float("nan"), device=self.device)
        k = int(flat[0])
        rows = flat.reshape(-1, 2 + 3 * k)
        if not bool((rows[:, 0] == k).all()):
            raise ValueError("R^2 got batches with different numbers of outputs")
        n, sum_y, sum_y2, sse = rows[:, 1].sum(), *rows[:, 2:].reshape(len(rows), 3, k).sum(dim=0)
        if n < 2:
            return torch.tensor(float("nan"), device=flat.device)
        sst = sum_y2 - sum_y.pow(2) / n
        # A spread below 1e-6 of the values (8 float32 steps) is rounding: a constant output. It
        # scores as sklearn's force_finite does: 1 when predicted exactly, else 0.
        constant = sst <= 1e-12 * sum_y2
        per_output = torch.where(constant, (sse == 0).double(), 1 - sse / sst.where(~constant, 1.0))
        return per_output.mean().float()
