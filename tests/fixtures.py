"""Small datasets written in the real on-disk formats (no network)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (200, 200, 30)]


def _image(colour: tuple[int, int, int], size: int, rng: np.random.Generator) -> np.ndarray:
    """A flat colour with a little noise: the class is visible, so a model can learn it."""
    base = np.array(colour, dtype=np.int16)[None, None, :]
    noise = rng.integers(-20, 21, (size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_tiny_imagenet(root: Path, per_class: int = 12, val_per_class: int = 4, seed: int = 0) -> Path:
    """A miniature tiny-imagenet-200/ tree: 3 classes of 64x64 JPEGs, val labelled only
    through val_annotations.txt (file names carry no class), an unlabelled test/."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    top = root / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819", "n01641577"]
    names = ["goldfish, Carassius auratus", "European fire salamander, Salamandra salamandra",
             "bullfrog, Rana catesbeiana"]
    (top / "train").mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(wnids) + "\n")
    extra = "n99999999\tsomething not in this dataset\n"
    (top / "words.txt").write_text(extra + "".join(f"{w}\t{n}\n" for w, n in zip(wnids, names)))
    for c, wnid in enumerate(wnids):
        folder = top / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(_image(COLOURS[c], 64, rng)).save(folder / f"{wnid}_{i}.JPEG", quality=95)
        (top / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    (top / "val" / "images").mkdir(parents=True)
    lines = []
    order = [c for c in range(len(wnids)) for _ in range(val_per_class)]
    rng.shuffle(order)
    for i, c in enumerate(order):
        Image.fromarray(_image(COLOURS[c], 64, rng)).save(top / "val" / "images" / f"val_{i}.JPEG", quality=95)
        lines.append(f"val_{i}.JPEG\t{wnids[c]}\t0\t0\t63\t63")
    (top / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (top / "test" / "images").mkdir(parents=True)
    Image.fromarray(_image(COLOURS[0], 64, rng)).save(top / "test" / "images" / "test_0.JPEG")
    return top


def make_cifar10(root: Path, per_batch: int = 40, n_test: int = 40, seed: int = 0) -> Path:
    """cifar-10-batches-py/ with the official pickle layout (protocol 2, bytes keys as str)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(n: int) -> dict:
        labels = [int(i % 10) for i in range(n)]
        return {"batch_label": "fixture", "labels": labels,
                "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_batch), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test), protocol=2))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_vis": 3072}, protocol=2))
    return folder


def make_cifar100(root: Path, n_train: int = 400, n_test: int = 100, seed: int = 0) -> Path:
    """cifar-100-python/ with train, test and meta pickles (fine and coarse labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)

    def split(n: int) -> dict:
        fine = [int(i % 100) for i in range(n)]
        return {"fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
                "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}

    (folder / "train").write_bytes(pickle.dumps(split(n_train), protocol=2))
    (folder / "test").write_bytes(pickle.dumps(split(n_test), protocol=2))
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def make_image_folder(root: Path, splits=("train", "val", "test", "addition"), per_class: int = 6,
                      classes=("cat", "dog", "owl"), seed: int = 0, size: int = 40) -> Path:
    """root/<split>/<class>/*.png|jpg with images of differing sizes (resized on decode)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in splits:
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = Image.fromarray(_image(COLOURS[c], size + i, rng))
                img.save(folder / (f"{i}.png" if i % 2 else f"{i}.jpg"))
    return root


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` (uint8) in the IDX format, gzip-compressed like the official (Fashion-)MNIST files."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as out:
        out.write(header + array.astype(np.uint8).tobytes())
