"""Confusion matrices for val (each validation epoch) and test, in the experiment loggers and as PNGs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from lab.utils.png import encode_png

_LIGHT = np.array([247, 251, 255], dtype=np.float32)  # the ends of matplotlib's "Blues"
_DARK = np.array([8, 48, 107], dtype=np.float32)


def render_confusion(matrix: np.ndarray, class_names: Sequence[str], title: str) -> np.ndarray:
    """An RGB uint8 image (H, W, 3): rows are true classes, columns predictions,
    colour is the row-normalised rate, numbers are counts (up to 30 classes).

    Drawn with Pillow rather than matplotlib: about 100x faster, which matters when
    a matrix is logged after every validation epoch.
    """
    from PIL import Image, ImageDraw, ImageFont

    n = len(class_names)
    cell = 36 if n <= 12 else 24 if n <= 30 else max(3, 900 // n)
    show_text, show_names = n <= 30, n <= 60
    font = ImageFont.load_default(size=max(9, min(14, cell // 2 - 2)))
    names = [str(c) for c in class_names] if show_names else []
    label_w = (max((int(font.getlength(c)) for c in names), default=0) + 10) if names else 6
    top, left = 34 + 16, 18 + label_w
    width, height = left + n * cell + 10, top + n * cell + label_w + 18
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)

    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    colours = (_LIGHT + (_DARK - _LIGHT) * rates[..., None]).astype(np.uint8)
    grid = np.kron(colours, np.ones((cell, cell, 1), dtype=np.uint8))
    img.paste(Image.fromarray(grid, "RGB"), (left, top))
    if cell >= 8:
        for k in range(n + 1):
            draw.line([(left + k * cell, top), (left + k * cell, top + n * cell)], fill=(255, 255, 255))
            draw.line([(left, top + k * cell), (left + n * cell, top + k * cell)], fill=(255, 255, 255))
    if show_text:
        for i, j in zip(*np.nonzero(matrix)):
            colour = "white" if rates[i, j] > 0.5 else "black"
            draw.text((left + j * cell + cell / 2, top + i * cell + cell / 2), str(int(matrix[i, j])),
                      fill=colour, font=font, anchor="mm")
    for i, name in enumerate(names):  # true classes down the left, predictions under the grid
        draw.text((left - 5, top + i * cell + cell / 2), name, fill="black", font=font, anchor="rm")
        label = Image.new("RGB", (label_w, cell), "white")
        ImageDraw.Draw(label).text((label_w - 5, cell / 2), name, fill="black", font=font, anchor="rm")
        img.paste(label.rotate(90, expand=True), (left + i * cell, top + n * cell + 2))
    acc = np.trace(matrix) / max(matrix.sum(), 1)
    heading = f"{title}  (top-1 {acc:.4f}, n={int(matrix.sum())})"
    draw.text((6, 6), heading, fill="black", font=ImageFont.load_default(size=14))
    draw.text((6, 28), "rows: true class, columns: predicted, colour: fraction of the row", fill=(90, 90, 90),
              font=ImageFont.load_default(size=11))
    draw.text((2, top + n * cell // 2), "true", fill=(90, 90, 90), font=ImageFont.load_default(size=11), anchor="lm")
    draw.text((left + n * cell // 2, height - 4), "predicted", fill=(90, 90, 90), font=ImageFont.load_default(size=11),
              anchor="md")
    return np.asarray(img)


class ConfusionMatrixLogger(L.Callback):
    """Counts (true, predicted) pairs from the `preds`/`target` that the task's
    validation_step/test_step return, then logs the matrix as an image under
    `val/confusion_matrix` and `test/confusion_matrix`, labelled with the
    datamodule's class names. The last val matrix and the test matrix are also
    saved as PNG and CSV in the run folder: the PNG is the picture logged to the
    experiment loggers (TensorBoard, MLflow, W&B; lab.runs.loggers), encoded once
    (lab.utils.png), not drawn and encoded again."""

    def __init__(self, every_n_val_epochs: int = 1, save_png: bool = True) -> None:
        self.every_n_val_epochs = max(int(every_n_val_epochs), 1)
        self.save_png = save_png
        self._counts: dict[str, torch.Tensor] = {}
        self.last: dict[str, np.ndarray] = {}
        self._png: dict[str, bytes] = {}  # split -> the PNG of its last matrix, once drawn
        self._epoch: dict[str, int] = {}  # split -> the epoch its last matrix was counted in

    # --- accumulate ----------------------------------------------------------------
    def _update(self, split: str, pl_module: L.LightningModule, outputs: Any) -> None:
        if not isinstance(outputs, dict) or "preds" not in outputs:
            return
        n = pl_module.num_classes
        target = outputs["target"].detach()
        if split not in self._counts:
            self._counts[split] = torch.zeros(n * n, dtype=torch.long, device=target.device)
        count_pairs(self._counts[split], target, outputs["preds"].detach(), n)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._update("val", pl_module, outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update("test", pl_module, outputs)

    # --- emit ------------------------------------------------------------------------
    def _finish(self, split: str, trainer: L.Trainer, pl_module: L.LightningModule, log: bool) -> None:
        counts = self._counts.pop(split, None)
        n = pl_module.num_classes
        if trainer.world_size > 1:
            # Each process counted its own shard: sum them (every rank takes part, even one without batches).
            if counts is None:
                counts = torch.zeros(n * n, dtype=torch.long, device=pl_module.device)
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
        if counts is None:
            return
        matrix = counts.view(n, n).cpu().numpy()
        self.last[split], self._epoch[split] = matrix, trainer.current_epoch
        self._png.pop(split, None)  # of an older matrix
        if log and trainer.is_global_zero:
            from lab.runs.loggers import image_loggers, log_image

            loggers = image_loggers(trainer.loggers)
            if loggers:
                log_image(loggers, f"{split}/confusion_matrix", self._picture(trainer, split), trainer.global_step)

    def _picture(self, trainer: L.Trainer, split: str):
        """The picture (H, W, 3 uint8) of the split's last matrix, drawn once; its PNG is kept for the run folder."""
        matrix = self.last[split]
        title = f"val confusion, epoch {self._epoch[split]}" if split == "val" else f"{split} confusion"
        image = render_confusion(matrix, self._names(trainer, len(matrix)), title)
        self._png[split] = encode_png(image)
        return image

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
        if split not in self._png:
            self._picture(trainer, split)
        (out / f"confusion_{split}.png").write_bytes(self._png[split])
        write_confusion_csv(out / f"confusion_{split}.csv", matrix, self._names(trainer, len(matrix)))


def count_pairs(counts: torch.Tensor, target: torch.Tensor, preds: torch.Tensor, n: int) -> torch.Tensor:
    """Add each (true, predicted) pair of a batch to `counts` (n*n int64, row-major), in place.

    A fixed-size index_add_ on the tensors' device: nothing is read back to the host. bincount
    would size its output from the largest value, a device-to-host sync on every batch."""
    flat = target.reshape(-1).long() * n + preds.reshape(-1).long()
    return counts.index_add_(0, flat, torch.ones_like(flat))


def write_confusion_csv(path: Path, matrix: np.ndarray, names: Sequence[str]) -> None:
    """Counts with class names: rows are true classes, columns predictions."""
    header = "true\\pred," + ",".join(n.replace(",", " ") for n in names)
    rows = [names[i].replace(",", " ") + "," + ",".join(str(int(v)) for v in matrix[i]) for i in range(len(names))]
    path.write_text("\n".join([header, *rows]) + "\n")
