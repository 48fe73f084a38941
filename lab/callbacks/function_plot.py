"""The fitted curve against the true function and the training points, in the experiment loggers and as a PNG.

Drawn with Pillow, not matplotlib: a plot costs a few milliseconds instead of ~50 ms
plus a ~0.5 s import, which matters because the plots are logged while training and
function-fitting runs are meant to cost no more than a plain PyTorch loop.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch

from lab.utils.png import encode_png

TRUE_COLOUR, NET_COLOUR, POINT_COLOUR = (30, 30, 30), (214, 39, 40), (150, 185, 230)


def _ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    raw = (hi - lo) / max(target, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step)
    return [round(k * step, 10) for k in range(first, math.floor(hi / step) + 1)]


def render_fit(
    x: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    x_train: np.ndarray,
    y_train: np.ndarray,
    title: str,
    subtitle: str = "",
    size: tuple[int, int] = (720, 440),
    scale: int = 1,
) -> np.ndarray:
    """An RGB uint8 image (H, W, 3): the true curve, the net's curve and the training points.

    The y-range is set by the true curve and the points, so a net that is far off
    (diverged, or barely trained) is clipped at the frame rather than squashing the
    picture; non-finite predictions leave gaps. `scale` 2 draws at twice the size and
    downsamples: smoother lines (Pillow does not anti-alias), about 3x the time.
    """
    from PIL import Image, ImageDraw, ImageFont

    s = max(int(scale), 1)
    width, height = size[0] * s, size[1] * s
    left, right, top, bottom = 64 * s, 16 * s, 58 * s, 40 * s
    pw, ph = width - left - right, height - top - bottom
    font = ImageFont.load_default(size=12 * s)
    small = ImageFont.load_default(size=11 * s)

    finite = np.concatenate([y_true[np.isfinite(y_true)], y_train[np.isfinite(y_train)]])
    ylo, yhi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    pad = 0.08 * (yhi - ylo) if yhi > ylo else 1.0
    ylo, yhi = ylo - pad, yhi + pad
    xlo, xhi = float(x.min()), float(x.max())

    def px(v: np.ndarray) -> np.ndarray:
        return (v - xlo) / (xhi - xlo) * (pw - 1)

    def py(v: np.ndarray) -> np.ndarray:
        return np.clip((yhi - v) / (yhi - ylo) * (ph - 1), -ph, 2 * ph)

    img = Image.new("RGB", (width, height), "white")
    plot = Image.new("RGB", (pw, ph), "white")
    draw, pdraw = ImageDraw.Draw(img), ImageDraw.Draw(plot)
    for value in _ticks(xlo, xhi):
        col = float(px(np.float64(value)))
        pdraw.line([(col, 0), (col, ph)], fill=(235, 235, 235), width=s)
        draw.text((left + col, top + ph + 6 * s), f"{value:g}", fill="black", font=small, anchor="mt")
    for value in _ticks(ylo, yhi):
        row = float(py(np.float64(value)))
        pdraw.line([(0, row), (pw, row)], fill=(235, 235, 235), width=s)
        draw.text((left - 6 * s, top + row), f"{value:g}", fill="black", font=small, anchor="rm")

    # Training points as small squares, one C call per offset (an ellipse per point costs ms).
    cols, rows = px(x_train), py(y_train)
    keep = np.isfinite(cols) & np.isfinite(rows)
    cols, rows = np.rint(cols[keep]).astype(int), np.rint(rows[keep]).astype(int)
    r = s + s // 2
    for dx in range(-r, r + 1):
        for dy in range(-r, r + 1):
            pdraw.point(list(zip((cols + dx).tolist(), (rows + dy).tolist())), fill=POINT_COLOUR)
    for ys, colour in ((y_true, TRUE_COLOUR), (y_pred, NET_COLOUR)):
        cols, rows = px(x), py(ys)
        ok = np.isfinite(ys)
        # Split at non-finite values so a gap is drawn as a gap.
        for run in np.split(np.arange(len(ys)), np.flatnonzero(np.diff(ok.astype(np.int8))) + 1):
            if ok[run[0]] and len(run) > 1:
                pdraw.line(list(zip(cols[run].tolist(), rows[run].tolist())), fill=colour, width=2 * s, joint="curve")
    img.paste(plot, (left, top))
    draw.rectangle([left - 1, top - 1, left + pw, top + ph], outline=(120, 120, 120), width=s)

    draw.text((left, 8 * s), title, fill="black", font=ImageFont.load_default(size=14 * s))
    if subtitle:
        draw.text((left, 28 * s), subtitle, fill=(90, 90, 90), font=small)
    legend = [(TRUE_COLOUR, "true f(x)"), (NET_COLOUR, "net"), (POINT_COLOUR, f"training points ({len(x_train)})")]
    x_pos = left
    for colour, label in legend:
        if colour == POINT_COLOUR:
            for dx in (4, 11, 18):
                cx, cy, rr = x_pos + dx * s, top - 10 * s, 2.5 * s
                draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=colour)
        else:
            draw.line([(x_pos, top - 10 * s), (x_pos + 22 * s, top - 10 * s)], fill=colour, width=3 * s)
        draw.text((x_pos + 28 * s, top - 10 * s), label, fill="black", font=small, anchor="lm")
        x_pos += 28 * s + int(font.getlength(label)) + 22 * s
    draw.text((left + pw // 2, height - 6 * s), "x", fill=(90, 90, 90), font=small, anchor="md")
    return np.asarray(img.reduce(s))


class FunctionPlotLogger(L.Callback):
    """Plots the net's curve over the data's range, with the true function and the
    training points (needs a datamodule with `curve()` and a train split, such as
    `data=function`).

    Logged to the experiment loggers (TensorBoard, MLflow, W&B) as the image `function_fit` at
    the first validation at or after every `every_n_epochs` study epochs, and at the last one
    (validation runs every `task.chunk` epochs, so that is the finest spacing). At the end of fitting the
    last picture is saved in the run folder as function_fit.png, and its numbers as
    function_fit.csv (x, true, net), which sweep reports and notebooks lay side by side.
    """

    def __init__(self, every_n_epochs: int = 100, save_png: bool = True, points: int = 400) -> None:
        if int(every_n_epochs) < 1:
            raise ValueError(f"callbacks.function_plot.every_n_epochs must be positive, got {every_n_epochs}")
        self.every_n_epochs = int(every_n_epochs)
        self.save_png = save_png
        self.points = int(points)
        self._next_epoch = self.every_n_epochs
        self._last: tuple[int, bytes, dict[str, np.ndarray]] | None = None  # (epoch, png, curve)

    @staticmethod
    def _epochs(trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        return int(getattr(pl_module, "epochs_completed", trainer.current_epoch))

    def curve(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, np.ndarray]:
        """x on a dense grid, the true f(x), the net's prediction, and the training points."""
        data = trainer.datamodule
        x, y_true = data.curve(self.points)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            y_pred = pl_module(x.unsqueeze(1).to(pl_module.device)).reshape(-1).float().cpu()
        pl_module.train(was_training)
        x_train, y_train = data.splits["train"]
        return {"x": x.numpy(), "true": y_true.numpy(), "net": y_pred.numpy(),
                "x_train": x_train.reshape(-1).numpy(), "y_train": y_train.reshape(-1).numpy()}

    def render(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The picture (RGB uint8) of the net as it is now, and the numbers drawn."""
        c = self.curve(trainer, pl_module)
        data = trainer.datamodule
        metrics = trainer.callback_metrics
        scores = "  ".join(f"{k} {float(metrics[k]):.4g}" for k in ("val/mse", "val/r2") if k in metrics)
        formula = getattr(getattr(data, "formula", None), "source", "")
        title = f"{getattr(data, 'target', 'f')}: epoch {self._epochs(trainer, pl_module)}   {scores}"
        subtitle = f"f(x) = {formula[:90]}" if formula else ""
        image = render_fit(c["x"], c["true"], c["net"], c["x_train"], c["y_train"], title, subtitle)
        return image, c

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule):
        """(the picture, H x W x 3 uint8); its PNG is kept for the run folder."""
        image, c = self.render(trainer, pl_module)
        self._last = (self._epochs(trainer, pl_module), encode_png(image, colors=32), c)
        return image

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        epoch = self._epochs(trainer, pl_module)
        last = epoch >= (getattr(pl_module, "max_study_epochs", None) or math.inf)
        if epoch < self._next_epoch and not last:
            return
        self._next_epoch = (epoch // self.every_n_epochs + 1) * self.every_n_epochs
        from lab.runs.loggers import image_loggers, log_image

        loggers = image_loggers(trainer.loggers)
        if loggers or (last and self.save_png):
            image = self._snapshot(trainer, pl_module)
            log_image(loggers, "function_fit", image, epoch)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.save_png or not trainer.is_global_zero or trainer.fast_dev_run:
            return
        # The last validation's picture is the net as it is now, unless fitting stopped elsewhere.
        if self._last is None or self._last[0] != self._epochs(trainer, pl_module):
            self._snapshot(trainer, pl_module)
        _, png, c = self._last
        out = Path(trainer.default_root_dir)
        (out / "function_fit.png").write_bytes(png)
        table = np.stack([c["x"], c["true"], c["net"]], axis=1)
        np.savetxt(out / "function_fit.csv", table, delimiter=",", header="x,true,net", comments="", fmt="%.7g")
