"""Epoch parity: `experiment=cnn_fashionmnist` through lab vs a hand-written PyTorch loop.

Both train the same model (built by the same code from the same seed) on the real
Fashion-MNIST files for the same number of epochs: the same batches (lab's in-memory uint8
tensors, the same seeded order), the same augmentation and normalisation (lab's batched
transform), AdamW with the same per-step warmup-cosine schedule, channels-last, and a
validation pass over the 5,000 val images after every epoch.

- lab: `lab.run.train` on the config `python -m lab.run experiment=cnn_fashionmnist`
  composes, everything at its defaults (progress bar, TensorBoard scalars, train/val
  top-1/top-5, best and last checkpoints, the val confusion matrix image every epoch).
  Timed: `trainer.fit` (its sanity check included).
- plain: zero_grad / forward / cross-entropy / backward / step / scheduler step, a running
  loss and accuracy kept as tensors (read once per epoch), then the validation loop.

Printed: each pair's times and ratio, the median of the per-pair ratios (the figure,
target <= 1.03), and the final train loss of each side (equal: the same steps were taken).
    .venv/bin/python bench/epoch_parity.py [--epochs 1] [--repeats 2] [--root DIR] [--json FILE] [override ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from function_fitting import compose  # noqa: E402  (bench/ is not a package)

FASHION = "/usr/share/datasets/fashion-mnist"


def run_lab(overrides: list[str], run_dir: Path) -> tuple[float, float]:
    """(trainer.fit seconds, final train/loss) of one lab run."""
    import lightning as L

    from lab.run import train

    seconds: list[float] = []
    fit = L.Trainer.fit

    def timed_fit(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fit(self, *args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    L.Trainer.fit = timed_fit
    try:
        metrics = train(compose([*overrides, "test=false"], run_dir))
    finally:
        L.Trainer.fit = fit
    return seconds[0], float(metrics["train/loss"])


def run_plain(overrides: list[str], steps: int | None = None) -> tuple[float, float, float]:
    """(seconds, final epoch's mean train loss, last val top-1) of the hand-written loop."""
    import torch
    from hydra.utils import instantiate

    from lab.tasks.schedulers import warmup_cosine

    cfg = compose(overrides)
    torch.manual_seed(cfg.seed)
    data = instantiate(cfg.data, seed=cfg.seed)
    data.setup("fit")
    model = instantiate({k: v for k, v in cfg.model.items() if k != "name"}, **data.model_inputs())
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay,
                                  betas=tuple(cfg.optimizer.betas))
    epochs = int(cfg.trainer.max_epochs)
    train_loader, val_loader = data.train_dataloader(), data.val_dataloader()
    scheduler = warmup_cosine(optimizer, max_epochs=epochs, warmup_epochs=cfg.scheduler.warmup_epochs,
                              warmup_start_factor=cfg.scheduler.warmup_start_factor,
                              min_lr_ratio=cfg.scheduler.min_lr_ratio,
                              steps_per_epoch=min(len(train_loader), steps or len(train_loader)))
    augment, plain = data.batch_transform(True), data.batch_transform(False)
    loss_fn = torch.nn.CrossEntropyLoss()

    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        loss_sum, correct, seen = torch.zeros(()), torch.zeros((), dtype=torch.long), 0
        for step, (x, y) in enumerate(train_loader):
            if steps is not None and step >= steps:
                break
            x = augment(x).contiguous(memory_format=torch.channels_last)
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
        train_loss = (loss_sum / seen).item()
        model.eval()
        val_correct, val_seen = 0, 0
        with torch.no_grad():
            for x, y in val_loader:
                logits = model(plain(x).contiguous(memory_format=torch.channels_last))
                val_correct += int((logits.argmax(1) == y).sum())
                val_seen += len(y)
    return time.perf_counter() - start, train_loss, val_correct / val_seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="extra lab overrides")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="lab/plain pairs")
    parser.add_argument("--steps", type=int, help="train steps per epoch (default: the whole epoch, 860)")
    parser.add_argument("--root", default=FASHION, help="folder with the four Fashion-MNIST IDX .gz files")
    parser.add_argument("--json", help="also write the figures to this JSON file (make bench)")
    args = parser.parse_args()
    if not (Path(args.root) / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"error: no Fashion-MNIST in {args.root}; apt-get install dataset-fashion-mnist or pass --root")

    import warnings

    import torch

    warnings.filterwarnings("ignore")
    overrides = ["experiment=cnn_fashionmnist", f"data.root={args.root}", "data.download=false",
                 f"trainer.max_epochs={args.epochs}", *args.overrides]
    if args.steps:
        overrides.append(f"trainer.limit_train_batches={args.steps}")
    pairs, lines = [], []
    with tempfile.TemporaryDirectory(prefix="bench-epoch-") as tmp:
        for rep in range(args.repeats):
            if rep % 2:
                lab_s, lab_loss = run_lab(overrides, Path(tmp) / f"lab{rep}")
                plain_s, plain_loss, plain_val = run_plain(overrides, args.steps)
            else:
                plain_s, plain_loss, plain_val = run_plain(overrides, args.steps)
                lab_s, lab_loss = run_lab(overrides, Path(tmp) / f"lab{rep}")
            pairs.append((lab_s, plain_s))
            lines.append(f"pair {rep + 1}: lab fit {lab_s:.2f} s (train/loss {lab_loss:.5f})   plain {plain_s:.2f} s "
                         f"(train loss {plain_loss:.5f}, val top-1 {plain_val:.4f})   ratio {lab_s / plain_s:.3f}")
    print("\n" + "\n".join(lines))
    ratio = statistics.median(a / b for a, b in pairs)
    lab_epoch = statistics.median(a for a, _ in pairs) / args.epochs
    plain_epoch = statistics.median(b for _, b in pairs) / args.epochs
    machine = (f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPU(s), "
               f"{platform.processor() or platform.machine()}")
    print(f"\nFashion-MNIST, cnn_fashionmnist, {args.epochs} epoch(s) per run, {args.repeats} pairs; {machine}")
    print(f"lab   per epoch: {lab_epoch:.2f} s (median)\nplain per epoch: {plain_epoch:.2f} s (median)")
    print(f"lab / plain: {ratio:.3f}  (median of the pairs' ratios; target <= 1.03)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "lab_s_per_epoch": lab_epoch, "plain_s_per_epoch": plain_epoch, "ratio": ratio,
            "pairs": pairs, "epochs": args.epochs, "machine": machine}, indent=2))


if __name__ == "__main__":
    main()
