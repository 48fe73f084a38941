"""Tiny ImageNet (200 classes, 64x64) in its official layout, decoded once and cached."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from lab.data.archive import download, find_or_fetch, safe_extract_zip
from lab.data.augment import as_size
from lab.data.classes import select_classes
from lab.data.holdout import check_holdout, holdout_count
from lab.data.images import cache_key, decode_images, list_images, load_cached, save_cached
from lab.data.memory import InMemoryClassificationData
from lab.data.splits import stratified_split
from lab.errors import DataNotFoundError

log = logging.getLogger(__name__)

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
FOLDER = "tiny-imagenet-200"
LAYOUT = "wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt"


class TinyImageNetDataModule(InMemoryClassificationData):
    """Reads `wnids.txt` (the classes), `words.txt` (their names), `train/<wnid>/images`,
    and `val/images` labelled by `val/val_annotations.txt`.

    The official val set is this module's test split; val is a stratified hold-out of
    train (`val_size`: a fraction, 0.1 = today's 10,000 of 100,000, or a count; by
    `split_seed`). The unlabelled official test set is not used. `classes` keeps a subset
    (lab.data.classes: the first N, or wnids, names from words.txt or indices into
    wnids.txt). Decoded images are cached as uint8 arrays in `<dataset>/.lab_cache/`, so
    later runs start in seconds.
    """

    def __init__(self, name: str = "tinyimagenet", root: str = "data", download: bool = True,
                 val_size: int | float = 0.1, split_seed: int = 0, image_size: int | list[int] | None = None,
                 skip_bad_images: bool = False, classes: int | list[str | int] | None = None, **common) -> None:
        super().__init__(**common)
        self.name = name
        self.root = Path(root).expanduser()
        self.download = download
        self.val_size = check_holdout("data.val_size", val_size)
        self.classes = classes
        self.split_seed = int(split_seed)
        self.decode_size = as_size(image_size)
        self.skip_bad_images = skip_bad_images
        self.class_names = []
        self.wnids: list[str] = []

    def find_dir(self) -> Path | None:
        for folder in (self.root / FOLDER, self.root):
            if (folder / "wnids.txt").is_file() and (folder / "train").is_dir():
                return folder
        return None

    def _fetch(self) -> str:
        """Download and extract the official zip; returns '' or why it failed."""
        archive = self.root / f"{FOLDER}.zip"
        try:
            if not archive.is_file():
                download(URL, archive, MD5)
            safe_extract_zip(archive, self.root)
        except Exception as err:
            return f"{type(err).__name__}: {err}".splitlines()[0]
        return ""

    def _locate(self) -> Path:
        folder, reason = find_or_fetch(self.find_dir, self._fetch, self.download)
        if folder is None:
            raise DataNotFoundError(
                f"tinyimagenet: dataset not found in {(self.root / FOLDER).absolute()} or {self.root.absolute()} "
                f"(expected {LAYOUT}); download failed ({reason}). Offline fix: download {URL} "
                f"(md5 {MD5}) and unzip it into {self.root.absolute()}."
            )
        return folder

    def _read_layout(self, folder: Path) -> tuple[list[Path], np.ndarray, list[Path], np.ndarray]:
        listed = [w.strip() for w in (folder / "wnids.txt").read_text().split() if w.strip()]
        words = {}
        words_file = folder / "words.txt"
        if not words_file.is_file():
            raise DataNotFoundError(f"{words_file}: missing (it maps each wnid to its class names)")
        for line in words_file.read_text().splitlines():
            if "\t" in line:
                wnid, text = line.split("\t", 1)
                words[wnid.strip()] = text.strip()
        names = [words.get(w, w).split(",")[0].strip() for w in listed]
        kept = select_classes(self.classes, listed, aliases=names)
        self.wnids, self.class_names = [listed[i] for i in kept], [names[i] for i in kept]
        index = {w: i for i, w in enumerate(self.wnids)}
        train_paths, train_labels = [], []
        for wnid in self.wnids:
            images_dir = folder / "train" / wnid / "images"
            files = list_images(images_dir) if images_dir.is_dir() else []
            if not files:
                raise DataNotFoundError(f"{images_dir}: no images for class {wnid} (listed in wnids.txt)")
            train_paths += files
            train_labels += [index[wnid]] * len(files)
        annotations = folder / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise DataNotFoundError(f"{annotations}: missing (it labels the official val images, lab's test split)")
        test_paths, test_labels, known = [], [], set(listed)
        for number, line in enumerate(annotations.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in known:
                raise DataNotFoundError(f"{annotations}:{number}: expected 'file<TAB>wnid<TAB>box', got {line!r}")
            if parts[1] not in index:  # a class left out by data.classes
                continue
            test_paths.append(folder / "val" / "images" / parts[0])
            test_labels.append(index[parts[1]])
        return train_paths, np.array(train_labels), test_paths, np.array(test_labels)

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        folder = self._locate()
        train_paths, train_labels, test_paths, test_labels = self._read_layout(folder)
        missing = [p for p in test_paths if not p.is_file()]
        if missing:
            raise DataNotFoundError(f"{missing[0]}: listed in val_annotations.txt but missing ({len(missing)} missing)")
        key = cache_key(train_paths + test_paths, self.decode_size, self.skip_bad_images)
        cache_dir = folder / ".lab_cache"
        arrays = load_cached(cache_dir, key)
        if arrays is None:
            log.info("decoding %d Tiny ImageNet images (cached afterwards)", len(train_paths) + len(test_paths))
            train_x, kept_train = decode_images(train_paths, self.decode_size, skip_bad=self.skip_bad_images)
            test_x, kept_test = decode_images(test_paths, self.decode_size, skip_bad=self.skip_bad_images)
            arrays = {"train_x": train_x, "train_y": train_labels[kept_train],
                      "test_x": test_x, "test_y": test_labels[kept_test]}
            save_cached(cache_dir, key, arrays)
        train_x, train_y = arrays["train_x"], arrays["train_y"].astype(np.int64)
        held_out = holdout_count("data.val_size", self.val_size, train_y, "training images")
        keep, held = stratified_split(train_y, held_out, self.split_seed)

        def part(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))

        return {"train": part(train_x[keep], train_y[keep]), "val": part(train_x[held], train_y[held]),
                "test": part(arrays["test_x"], arrays["test_y"])}
