"""Confusion matrices for val (each validation epoch) and test, in TensorBoard and as PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch


def render_confusion(matrix: np.ndarray, class_names: Sequence[str], title: str):
    """A matplotlib Figure: rows are true classes, columns predictions, colour is the
    row-normalised rate, numbers are counts (when there are 20 classes or fewer)."""
    from matplotlib.figure import Figure

    n = len(class_names)
    side = min(max(4.0, 0.45 * n + 2.0), 24.0)
    fig = Figure(figsize=(side, side), dpi=80, layout="constrained")
    ax = fig.add_subplot()
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 50:
        ax.set_xticks(range(n), labels=class_names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels=class_names, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    acc = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"{title} (top-1 {acc:.4f}, n={int(matrix.sum())})")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return fig


class ConfusionMatrixLogger(L.Callback):
    """Counts (true, predicted) pairs from the `preds`/`target` that the task's
    validation_step/test_step return, then logs the matrix as an image under
    `val/confusion_matrix` and `test/confusion_matrix`, labelled with the
    datamodule's class names. The last val matrix and the test matrix are also
    saved as PNG and CSV in the run folder."""

    def __init__(self, every_n_val_epochs: int = 1, save_png: bool = True) -> None:
        self.every_n_val_epochs = max(int(every_n_val_epochs), 1)
        self.save_png = save_png
        self._counts: dict[str, torch.Tensor] = {}
        self.last: dict[str, np.ndarray] = {}

    # --- accumulate ----------------------------------------------------------------
    def _update(self, split: str, pl_module: L.LightningModule, outputs: Any) -> None:
        if not isinstance(outputs, dict) or "preds" not in outputs:
            return
        n = pl_module.num_classes
        flat = outputs["target"].detach() * n + outputs["preds"].detach()
        counts = torch.bincount(flat, minlength=n * n)
        if split in self._counts:
            self._counts[split] += counts
        else:
            self._counts[split] = counts

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._update("val", pl_module, outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update("test", pl_module, outputs)

    # --- emit ------------------------------------------------------------------------
    def _finish(self, split: str, trainer: L.Trainer, pl_module: L.LightningModule, log: bool) -> None:
        counts = self._counts.pop(split, None)
        if counts is None:
            return
        n = pl_module.num_classes
        matrix = counts.view(n, n).cpu().numpy()
        self.last[split] = matrix
        if log and trainer.is_global_zero:
            from lightning.pytorch.loggers import TensorBoardLogger

            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    fig = render_confusion(matrix, self._names(trainer, n), f"{split} confusion, epoch {trainer.current_epoch}")
                    logger.experiment.add_figure(f"{split}/confusion_matrix", fig, global_step=trainer.global_step)

    def _names(self, trainer: L.Trainer, n: int) -> list[str]:
        names = list(getattr(trainer.datamodule, "class_names", None) or [])
        return names if len(names) == n else [str(i) for i in range(n)]

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        log = (trainer.current_epoch + 1) % self.every_n_val_epochs == 0
        self._finish("val", trainer, pl_module, log)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish("test", trainer, pl_module, True)
        self._save(trainer, "test")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._save(trainer, "val")

    def _save(self, trainer: L.Trainer, split: str) -> None:
        if not self.save_png or split not in self.last or not trainer.is_global_zero or trainer.fast_dev_run:
            return
        out = Path(trainer.default_root_dir)
        matrix = self.last[split]
        names = self._names(trainer, len(matrix))
        render_confusion(matrix, names, f"{split} confusion").savefig(out / f"confusion_{split}.png")
        header = "true\\pred," + ",".join(n.replace(",", " ") for n in names)
        rows = [names[i].replace(",", " ") + "," + ",".join(str(int(v)) for v in matrix[i]) for i in range(len(names))]
        (out / f"confusion_{split}.csv").write_text("\n".join([header, *rows]) + "\n")
