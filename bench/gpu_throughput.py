"""GPU path: Fashion-MNIST ResNet-18 training images/s, lab vs a plain PyTorch loop.

Both sides train torchvision's ResNet-18 (lab's `model=torchvision`, 3x3 stem for 28 px
images, 1-channel input) on the real Fashion-MNIST files with the same batches, SGD with
momentum, bf16 autocast, channels-last and cudnn.benchmark:
- lab: `python -m lab.run data=fashion_mnist model=torchvision ...` composed in-process, its
  defaults on a CUDA device (uint8 dataset moved to the GPU once, augmented there in batches,
  bf16-mixed, channels-last, cudnn.benchmark); timed with a callback from the end of the
  warm-up steps to the end of the timed steps (torch.cuda.synchronize at both ends).
- plain: the uint8 images on the GPU, a random permutation per epoch, the same normalisation,
  `torch.autocast(bfloat16)`, zero_grad / forward / loss / backward / step.
Printed: images/s of each and lab / plain (time ratio, target <= 1.03). Without a CUDA device
it prints `skipped` and exits 0 (make bench on a CPU machine); `--device cpu --steps 3` runs
both sides on the CPU as a smoke check of the script itself.
    .venv/bin/python bench/gpu_throughput.py [--steps 300] [--warmup 30] [--batch-size 512] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import FASHION, compose  # noqa: E402  (bench/ is not a package)


def overrides(args) -> list[str]:
    steps = args.warmup + args.steps
    return ["data=fashion_mnist", f"data.root={args.root}", "data.download=false", f"data.batch_size={args.batch_size}",
            "model=torchvision", "model.arch=resnet18", "model.small_input_stem=true",
            "optimizer=sgd", "optimizer.lr=0.05", "scheduler=none", "trainer.max_epochs=1",
            f"trainer.limit_train_batches={steps}", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
            # precision, benchmark and channels_last stay `auto`: on a CUDA device, lab's GPU path
            "test=false", "logger=none", f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}"]


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_lab(args) -> float:
    """Seconds for the timed steps (after the warm-up) of a lab run."""
    import lightning as L

    from lab.train.fit import train

    first, last = args.warmup, args.warmup + args.steps
    marks: dict[str, float] = {}

    class StepTimer(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx + 1 in (first, last):
                sync(args.device)
                marks["start" if batch_idx + 1 == first else "end"] = time.perf_counter()

    train(compose(overrides(args), Path(tempfile.mkdtemp(prefix="bench-gpu-"))), callbacks=[StepTimer()])
    return marks["end"] - marks["start"]


def run_plain(args) -> float:
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
    torch.backends.cudnn.benchmark = True
    loss_fn = torch.nn.CrossEntropyLoss()
    total = args.warmup + args.steps
    start = None
    step = 0
    while step < total:
        order = torch.randperm(len(labels), device=device)
        for b in range(len(labels) // args.batch_size):
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            x = ((images[idx].float() / 255.0 - mean) / std).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = loss_fn(model(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == args.warmup:
                sync(args.device)
                start = time.perf_counter()
            if step == total:
                break
    sync(args.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps first (cudnn autotuning)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--root", default=FASHION, help="folder with the four Fashion-MNIST IDX .gz files")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device on this machine (the GPU figure needs one)")
        return
    if not (Path(args.root) / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"error: no Fashion-MNIST in {args.root}; apt-get install dataset-fashion-mnist or pass --root")
    warnings.filterwarnings("ignore")
    plain_s = run_plain(args)
    lab_s = run_lab(args)
    images = args.steps * args.batch_size
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"\nFashion-MNIST ResNet-18, batch {args.batch_size}, {args.steps} timed steps after {args.warmup}; {name}")
    print(f"lab   images/s: {images / lab_s:,.0f}")
    print(f"plain images/s: {images / plain_s:,.0f}")
    print(f"lab / plain: {lab_s / plain_s:.3f}  (time ratio; target <= 1.03)")
    if args.json:
        figures = {"lab_images_per_s": images / lab_s, "plain_images_per_s": images / plain_s,
                   "ratio": lab_s / plain_s, "device": name}
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
