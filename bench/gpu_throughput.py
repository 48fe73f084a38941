"""GPU path: Fashion-MNIST ResNet-18 training images/s, lab vs a plain PyTorch loop.

Both sides train torchvision's ResNet-18 (lab's `model=torchvision`, 3x3 stem for 28 px
images, 1-channel input) on the Fashion-MNIST files with batches of the same size, SGD with
momentum, bf16 autocast, channels-last and cudnn.benchmark, for `warmup + steps` optimizer
steps that run across epochs (an epoch is 108 batches at the defaults, see --help):
- lab: `python -m lab.run data=fashion_mnist model=torchvision ...` composed in-process, at its
  defaults on a CUDA device (uint8 dataset moved to the GPU once, augmented there in batches,
  bf16-mixed, channels-last, cudnn.benchmark), with `trainer.max_steps` = warmup + steps,
  no epoch limit, no validation and no checkpoint writes (the plain loop writes none either:
  the figure is training throughput). Timed by a callback on `trainer.global_step`, from the
  end of the warm-up steps to the end of the timed steps (torch.cuda.synchronize at both ends).
- plain: the uint8 images on the GPU, a random permutation per epoch cut into the same batches
  as lab's loader (the last, partial batch included), the same normalisation,
  `torch.autocast(bfloat16)`, zero_grad / forward / loss / backward / step.
Printed: images/s of each and lab / plain (time per image; target <= 1.10). Without a CUDA
device it prints `skipped` and exits 0 (make bench on a CPU machine); `--device cpu --steps 3
--warmup 2 --batch-size 64` runs both sides on the CPU as a smoke check of the script itself.
    .venv/bin/python bench/gpu_throughput.py [--steps 300] [--warmup 30] [--batch-size 512] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import FASHION, compose  # noqa: E402  (bench/ is not a package)

TARGET = 1.10  # issue 21: lab at most 1.10x the plain loop's time per image
VAL_SIZE = 5000  # conf/data/fashion_mnist.yaml data.val_size: carved out of the 60,000 training images
TRAIN_IMAGES = 60_000 - VAL_SIZE


def epoch_batches(train_images: int, batch_size: int) -> int:
    """Batches in one epoch of lab's loader: all of them, a last partial one included, unless
    it would hold a single image (lab.data.loader.TensorBatchLoader drops that one)."""
    batches = math.ceil(train_images / batch_size)
    return batches - 1 if train_images > 1 and train_images % batch_size == 1 else batches


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, stop) of each batch of one epoch, cut as lab's loader cuts it."""
    return [(b * batch_size, min((b + 1) * batch_size, n)) for b in range(epoch_batches(n, batch_size))]


def overrides(args) -> list[str]:
    total = args.warmup + args.steps
    return ["data=fashion_mnist", f"data.root={args.root}", "data.download=false", f"data.batch_size={args.batch_size}",
            f"data.val_size={args.val_size}",
            "model=torchvision", "model.arch=resnet18", "model.small_input_stem=true",
            "optimizer=sgd", "optimizer.lr=0.05", "scheduler=none",
            # Steps, not epochs: the run stops after `total` optimizer steps, whatever the epoch size.
            f"++trainer.max_steps={total}", "trainer.max_epochs=-1",
            "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
            # No checkpoint writes inside the timed steps (the plain loop writes none).
            "~callbacks.model_checkpoint", "~callbacks.last_checkpoint", "++trainer.enable_checkpointing=false",
            # precision, benchmark and channels_last stay `auto`: on a CUDA device, lab's GPU path
            "test=false", "logger=none", f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}"]


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_lab(args) -> tuple[float, int, int]:
    """(seconds, images, batches per epoch) of the timed steps (after the warm-up) of a lab run."""
    import lightning as L

    from lab.train.fit import train

    first, last = args.warmup, args.warmup + args.steps
    marks: dict[str, float] = {}
    seen = {"images": 0, "step": 0, "epoch_batches": 0}

    class StepTimer(L.Callback):
        """Marks the clock when trainer.global_step (optimizer steps done) reaches the warm-up and the end."""

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            seen["step"], seen["epoch_batches"] = step, trainer.num_training_batches
            if first < step <= last:
                seen["images"] += len(batch[1])
            if step in (first, last) and ("start" if step == first else "end") not in marks:
                sync(args.device)
                marks["start" if step == first else "end"] = time.perf_counter()

    train(compose(overrides(args), Path(tempfile.mkdtemp(prefix="bench-gpu-"))), callbacks=[StepTimer()])
    missing = [m for m in ("start", "end") if m not in marks]
    if missing:
        sys.exit(f"error: the lab run stopped after {seen['step']} optimizer steps, before step "
                 f"{first if 'start' in missing else last} ({seen['epoch_batches']} batches an epoch); "
                 "lower --warmup/--steps or check the run's output above")
    return marks["end"] - marks["start"], seen["images"], seen["epoch_batches"]


def run_plain(args) -> tuple[float, int]:
    """(seconds, images) of the timed steps of the plain loop, over epochs cut as lab's loader cuts them."""
    import torch

    from lab.build import build_parts

    cfg = compose(overrides(args), Path(tempfile.mkdtemp(prefix="bench-gpu-plain-")))
    parts = build_parts(cfg)  # seeded as lab seeds a run
    data, device = parts.datamodule, torch.device(args.device)
    images, labels = (t.to(device) for t in data.splits["train"])
    model = parts.model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)  # conf/optimizer/sgd
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    loss_fn = torch.nn.CrossEntropyLoss()
    total = args.warmup + args.steps
    bounds = batch_bounds(len(labels), args.batch_size)
    start = None
    step = timed_images = 0
    while step < total:
        order = torch.randperm(len(labels), device=device)
        for lo, hi in bounds:
            idx = order[lo:hi]
            x = ((images[idx].float() / 255.0 - mean) / std).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = loss_fn(model(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step > args.warmup:
                timed_images += hi - lo
            if step == args.warmup:
                sync(args.device)
                start = time.perf_counter()
            if step == total:
                break
    sync(args.device)
    return time.perf_counter() - start, timed_images


def build_parser() -> argparse.ArgumentParser:
    default_epoch = epoch_batches(TRAIN_IMAGES, 512)
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=f"Epoch size: Fashion-MNIST's 60,000 training images minus --val-size {VAL_SIZE:,} held out for val "
               f"leave {TRAIN_IMAGES:,}; at --batch-size 512 an epoch is ceil({TRAIN_IMAGES:,} / 512) = "
               f"{default_epoch} batches. Both sides run warmup + steps optimizer steps across as many epochs as that "
               f"takes (the defaults, 30 + 300 = 330 steps, span {math.ceil(330 / default_epoch)} epochs), so any "
               "--steps and --warmup can run.")
    parser.add_argument("--steps", type=int, default=300, help="timed optimizer steps (default 300)")
    parser.add_argument("--warmup", type=int, default=30,
                        help="untimed optimizer steps first, at least 1: cudnn autotuning, allocator (default 30)")
    parser.add_argument("--batch-size", type=int, default=512, help="images per step (default 512)")
    parser.add_argument("--root", default=FASHION,
                        help=f"folder with the four Fashion-MNIST IDX .gz files (default {FASHION})")
    parser.add_argument("--val-size", type=int, default=VAL_SIZE,
                        help=f"training images held out for val, as data.val_size (default {VAL_SIZE:,})")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cuda (default; skipped without one) or cpu (a smoke check of the script)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 1 or args.batch_size < 2:
        parser.error("--steps and --warmup must be >= 1 (the clock starts after a step) and --batch-size >= 2")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device on this machine (the GPU figure needs one)")
        return
    if not (Path(args.root) / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"error: no Fashion-MNIST in {args.root}; apt-get install dataset-fashion-mnist or pass --root")
    warnings.filterwarnings("ignore")
    plain_s, plain_images = run_plain(args)
    lab_s, lab_images, per_epoch = run_lab(args)
    total = args.warmup + args.steps
    lab_rate, plain_rate = lab_images / lab_s, plain_images / plain_s
    ratio = plain_rate / lab_rate  # time per image, lab over plain
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"\nFashion-MNIST ResNet-18, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} "
          f"({per_epoch} batches an epoch, {total} steps span {math.ceil(total / per_epoch)} epochs); {name}")
    print(f"lab   images/s: {lab_rate:,.0f}")
    print(f"plain images/s: {plain_rate:,.0f}")
    verdict = "met" if ratio <= TARGET else "missed"
    print(f"lab / plain: {ratio:.3f}  (time per image; target <= {TARGET:.2f}x the plain loop's time: {verdict})")
    if args.json:
        figures = {"lab_images_per_s": lab_rate, "plain_images_per_s": plain_rate, "ratio": ratio,
                   "target": TARGET, "device": name, "batch_size": args.batch_size, "steps": args.steps,
                   "warmup": args.warmup, "epoch_batches": per_epoch}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
