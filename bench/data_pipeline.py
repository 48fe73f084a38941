"""Images/s of lab's fast data path against a torchvision-PIL + DataLoader pipeline.

Both do the same CIFAR-style training augmentation (random crop 32 with padding 4,
horizontal flip, normalise) over the same 50,000 uint8 32x32 RGB images, batch 256,
one shuffled epoch each, in this process on this machine:

- fast path: lab's TensorBatchLoader + BatchTransform (batched tensor ops, main process);
- reference: per-image PIL + torchvision transforms in a DataLoader, with the same
  number of worker processes as the machine has cores (and, for completeness, with 0).

    .venv/bin/python bench/data_pipeline.py [--images 50000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from lab.data.augment import BatchTransform, per_sample_transform
from lab.data.loader import PerImageDataset, TensorBatchLoader

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def fast_path(images: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
    loader = TensorBatchLoader(images, labels, batch, shuffle=True, seed=0)
    transform = BatchTransform(MEAN, STD, train=True, crop_padding=4, hflip=True, seed=0)
    start = time.perf_counter()
    seen = 0
    for x, _ in loader:
        out = transform(x)
        seen += out.shape[0]
    return seen / (time.perf_counter() - start)


def pil_pipeline(images: torch.Tensor, labels: torch.Tensor, batch: int, workers: int) -> float:
    transform = per_sample_transform(MEAN, STD, train=True, image_size=(32, 32), crop_padding=4, hflip=True)
    loader = torch.utils.data.DataLoader(PerImageDataset(images, labels, transform), batch_size=batch, shuffle=True,
                                         num_workers=workers, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    seen = 0
    for x, _ in loader:
        seen += x.shape[0]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (args.images,), generator=gen)
    fast_path(images[:2048], labels[:2048], args.batch)  # warm-up (allocator, kernels)
    fast = fast_path(images, labels, args.batch)
    pil = pil_pipeline(images, labels, args.batch, args.workers)
    pil0 = pil_pipeline(images[: args.images // 5], labels[: args.images // 5], args.batch, 0)
    print(f"images: {args.images} x 3x32x32 uint8, batch {args.batch}, torch threads {torch.get_num_threads()}")
    print(f"fast path (batched tensor ops, main process)   {fast:>10,.0f} images/s")
    print(f"torchvision-PIL DataLoader, {args.workers} workers          {pil:>10,.0f} images/s")
    print(f"torchvision-PIL DataLoader, 0 workers          {pil0:>10,.0f} images/s")
    print(f"ratio fast / PIL ({args.workers} workers): {fast / pil:.1f}x   (0 workers: {fast / pil0:.1f}x)")


if __name__ == "__main__":
    main()
