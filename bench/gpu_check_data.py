"""bench/gpu_check.py's synthetic data in the real on-disk formats (Fashion-MNIST IDX .gz, CIFAR-10
pickles, a 200-class Tiny ImageNet tree) and the overrides that point each path at it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sizes:
    """Data and run sizes: the GPU's (real-sized datasets, short runs) or the CPU dry run's (tiny)."""

    fashion_train: int  # IDX train images (val is carved out of them)
    fashion_test: int
    fashion_val: int
    cifar_per_batch: int  # images in each of the 5 CIFAR-10 data batches
    cifar_test: int
    cifar_val: int
    tiny_per_class: int  # Tiny ImageNet training images per class (200 classes)
    tiny_val_per_class: int  # official val images per class (lab's test split)
    tiny_val: str  # data.val_size
    train_batches: int  # trainer.limit_train_batches of the short runs
    resnet50_batches: int
    resnet50_batch: str  # data.batch_size / data.eval_batch_size overrides for ResNet-50 ("" = as shipped)
    tiny_batch: str
    function_epochs: int
    eval_batch: int  # data.eval_batch_size in the sync checks
    throughput: tuple[str, ...]  # bench/gpu_throughput.py arguments
    timeout_s: int  # per subprocess


GPU = Sizes(fashion_train=60_000, fashion_test=10_000, fashion_val=5_000, cifar_per_batch=2_000, cifar_test=1_000,
            cifar_val=1_000, tiny_per_class=50, tiny_val_per_class=10, tiny_val="0.1", train_batches=100,
            resnet50_batches=20, resnet50_batch="", tiny_batch="", function_epochs=1000, eval_batch=256,
            throughput=(), timeout_s=300)
CPU = Sizes(fashion_train=3_000, fashion_test=500, fashion_val=500, cifar_per_batch=40, cifar_test=40, cifar_val=40,
            tiny_per_class=2, tiny_val_per_class=1, tiny_val="200", train_batches=8, resnet50_batches=2,
            resnet50_batch="4", tiny_batch="32", function_epochs=250, eval_batch=16,
            throughput=("--steps", "3", "--warmup", "2", "--batch-size", "16"), timeout_s=900)


# --------------------------------------------------------------------------- synthetic data


def make_fashion_mnist(folder: Path, n_train: int, n_test: int, seed: int = 0, noise: float = 0.1) -> Path:
    """The four Fashion-MNIST IDX .gz files: 28x28 class templates plus pixel noise, learnable in a
    few dozen steps; a `noise` fraction of labels is redrawn at random, so top-1 stays below 1 (about
    0.91) and lab.eval's comparison meets wrong and uncertain predictions too."""
    import numpy as np

    from tests.fixtures import write_idx

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    templates = rng.integers(0, 256, (10, 28, 28)).astype(np.float32)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        classes = rng.permutation(np.arange(n) % 10)
        images = np.clip(templates[classes] * 0.6 + 50 + rng.normal(0, 40, (n, 28, 28)), 0, 255).astype(np.uint8)
        labels = np.where(rng.random(n) < noise, rng.integers(0, 10, n), classes).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def make_tiny_imagenet(root: Path, per_class: int, val_per_class: int, classes: int = 200, seed: int = 0) -> Path:
    """tiny-imagenet-200/ in the official layout with `classes` wnids of 64x64 JPEGs (tests/fixtures.py's
    make_tiny_imagenet writes 3 classes; an epoch time needs Tiny ImageNet's 200)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    top = root / "tiny-imagenet-200"
    wnids = [f"n{9_000_000 + c:08d}" for c in range(classes)]
    colours = rng.integers(0, 256, (classes, 3))
    (top / "train").mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (top / "words.txt").write_text("".join(f"{w}\tsynthetic class {c}\n" for c, w in enumerate(wnids)))

    def image(c: int):
        noise = rng.integers(-40, 41, (64, 64, 3))
        return Image.fromarray(np.clip(colours[c][None, None, :] + noise, 0, 255).astype(np.uint8))

    for c, wnid in enumerate(wnids):
        folder = top / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(per_class):
            image(c).save(folder / f"{wnid}_{i}.JPEG", quality=90)
        (top / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    (top / "val" / "images").mkdir(parents=True)
    lines = []
    for i, c in enumerate(c for c in range(classes) for _ in range(val_per_class)):
        image(c).save(top / "val" / "images" / f"val_{i}.JPEG", quality=90)
        lines.append(f"val_{i}.JPEG\t{wnids[c]}\t0\t0\t63\t63")
    (top / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (top / "test" / "images").mkdir(parents=True)
    image(0).save(top / "test" / "images" / "test_0.JPEG")
    return top


def make_data(base: Path, sizes: Sizes) -> dict[str, Path]:
    """Every dataset the paths read, in its real on-disk format, under `base`."""
    from tests.fixtures import make_cifar10

    make_fashion_mnist(base / "fashion-mnist", sizes.fashion_train, sizes.fashion_test)
    make_cifar10(base / "cifar", per_batch=sizes.cifar_per_batch, n_test=sizes.cifar_test)
    make_tiny_imagenet(base / "tiny", sizes.tiny_per_class, sizes.tiny_val_per_class)
    return {"fashion": base / "fashion-mnist", "cifar": base / "cifar", "tiny": base / "tiny"}


# --------------------------------------------------------------------------- the paths' configs


def data_overrides(data: dict[str, Path], sizes: Sizes) -> dict[str, list[str]]:
    """Overrides that point each experiment at its synthetic dataset (never the network)."""
    return {
        "fashion": [f"data.root={data['fashion']}", "data.download=false", f"data.val_size={sizes.fashion_val}"],
        "cifar": [f"data.root={data['cifar']}", "data.download=false", f"data.val_size={sizes.cifar_val}"],
        "tiny": [f"data.root={data['tiny']}", "data.download=false", f"data.val_size={sizes.tiny_val}"],
    }


def sync_paths(data: dict[str, Path], sizes: Sizes) -> list[tuple[str, list[str], bool]]:
    """(name, overrides, fill the GPU first) of each data path the sync check walks: every augmentation,
    the host-memory fallback (pinned batches), the class-balanced sampler and triplet loss, the 224 px
    upsample, a Tiny ImageNet ResNet."""
    d = data_overrides(data, sizes)
    small = [f"data.eval_batch_size={sizes.eval_batch}"]
    fashion = ["experiment=cnn_fashionmnist", *d["fashion"], *small, "data.augment.crop_padding=2",
               "data.augment.hflip=true", "data.augment.cutout=8"]
    return [
        ("fashion_mnist", fashion, False),
        ("fashion_mnist_pinned", fashion, True),
        ("triplet", ["experiment=triplet_fashionmnist", *d["fashion"], *small], False),
        ("cifar10_224", ["experiment=resnet50_cifar10", "model.pretrained=false", *d["cifar"], *small,
                         *([f"data.batch_size={sizes.resnet50_batch}"] if sizes.resnet50_batch else [])], False),
        ("tinyimagenet", ["experiment=resnet_tinyimagenet", *d["tiny"], *small,
                          *([f"data.batch_size={sizes.tiny_batch}"] if sizes.tiny_batch else [])], False),
    ]


