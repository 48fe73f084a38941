"""Your own images: root/<split>/<class>/*.{jpg,jpeg,png,bmp}."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lab.data.augment import as_size
from lab.data.classes import select_classes
from lab.data.holdout import check_holdout, holdout_count
from lab.data.images import cache_key, decode_images, list_images, load_cached, save_cached
from lab.data.memory import InMemoryClassificationData
from lab.data.splits import stratified_split
from lab.errors import ConfigError, DataNotFoundError


class ImageFolderDataModule(InMemoryClassificationData):
    """Splits are sub-folders of `root` (`train_split`, `val_split`, `test_split`);
    classes are their sub-folders and must be the same set in every split used.

    `extra_train_splits=[val, addition]` merges those splits into training (then point
    `val_split` at another one); `classes` keeps a subset (lab.data.classes: the first N,
    or names or indices into the sorted class list); images are resized to `image_size`
    when decoded and cached in `<root>/.lab_cache/`. A root without a `val_split` folder
    (only train/ and test/) gets val as a stratified hold-out of train (`val_size`: a
    fraction or a count, by `split_seed`), with a note. With `folds=K` (k-fold, lab.data.memory)
    the folds are drawn from train ∪ val: the train (and extra) splits plus the val folder when
    there is one (val_size is then not used); the test folder is never folded.
    """

    def __init__(self, name: str = "imagefolder", root: str = "data/images", image_size: int | list[int] | None = 112,
                 train_split: str = "train", val_split: str = "val", test_split: str = "test",
                 extra_train_splits: Sequence[str] = (), classes: int | Sequence[str | int] | None = None,
                 skip_bad_images: bool = False, grayscale: bool = False, val_size: int | float = 0.1,
                 split_seed: int = 0, **common) -> None:
        super().__init__(**common)
        self.name = name
        self.root = Path(root).expanduser()
        self.decode_size = as_size(image_size)
        self.train_split, self.val_split, self.test_split = train_split, val_split, test_split
        self.extra_train_splits = list(extra_train_splits or [])
        self.classes = classes if isinstance(classes, int) or not classes else list(classes)
        self.val_size = check_holdout("data.val_size", val_size)
        self.split_seed = int(split_seed)
        self.skip_bad_images = skip_bad_images
        self.mode = "L" if grayscale else "RGB"
        self.class_names = []
        if train_split in self.extra_train_splits:
            raise ConfigError(f"data.extra_train_splits repeats the train split {train_split!r}")
        for split in (val_split, test_split):
            if split in self.extra_train_splits:
                print(f"warning: data.extra_train_splits includes {split!r}, which is also evaluated on; "
                      f"set data.val_split/data.test_split to another split")

    def _classes_of(self, split: str) -> list[str]:
        folder = self.root / split
        if not folder.is_dir():
            available = sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
            raise DataNotFoundError(
                f"{folder.absolute()}: split folder missing "
                f"(expected {self.root.absolute()}/<split>/<class>/*.jpg|png; "
                f"splits found: {available or 'none'})"
            )
        names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not names:
            raise DataNotFoundError(f"{folder.absolute()}: no class folders (expected {folder}/<class>/*.jpg|png)")
        return names

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if not self.root.is_dir():
            raise DataNotFoundError(
                f"imagefolder: {self.root.absolute()} does not exist "
                "(expected <root>/{train,val,test}/<class>/*.jpg|png)"
            )
        carve_val = not (self.root / self.val_split).is_dir()  # no val/ folder: a hold-out of train
        used = [self.train_split, *self.extra_train_splits, *([] if carve_val else [self.val_split]), self.test_split]
        used = list(dict.fromkeys(used))
        per_split = {s: self._classes_of(s) for s in used}
        reference = per_split[self.train_split]
        for split, names in per_split.items():
            if names != reference:
                only_train = sorted(set(reference) - set(names))
                only_here = sorted(set(names) - set(reference))
                raise DataNotFoundError(
                    f"{(self.root / split).absolute()}: classes differ from {self.train_split}/ "
                    f"(missing: {only_train or 'none'}; extra: {only_here or 'none'})"
                )
        self.class_names = [reference[i] for i in select_classes(self.classes, reference)]
        arrays = {s: self._decode_split(s) for s in used}
        train_parts = [arrays[s] for s in [self.train_split, *self.extra_train_splits]]
        train = (torch.cat([p[0] for p in train_parts]), torch.cat([p[1] for p in train_parts]))
        if carve_val:
            train, val = self._hold_out_val(*train)
        else:
            val = arrays[self.val_split]
        return {"train": train, "val": val, "test": arrays[self.test_split]}

    def _hold_out_val(self, images: torch.Tensor, labels: torch.Tensor):
        """(train, val): val a stratified `val_size` of the training images, when root has no val folder."""
        from lab.train.distributed import is_rank_zero

        if self.folds:  # k-fold draws val from all of train (lab.data.memory): val_size is not used
            return (images, labels), (images[:0], labels[:0])
        count = holdout_count("data.val_size", self.val_size, labels.numpy(), "training images")
        keep, held = (torch.from_numpy(i) for i in stratified_split(labels.numpy(), count, self.split_seed))
        if is_rank_zero():
            print(f"note: imagefolder: no {self.val_split}/ folder in {self.root}; val is {count} of the "
                  f"{len(labels)} training images (data.val_size={self.val_size}), stratified by class")
        return (images[keep], labels[keep]), (images[held], labels[held])

    def _decode_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        paths, labels = [], []
        for index, name in enumerate(self.class_names):
            files = list_images(self.root / split / name)
            if not files:
                raise DataNotFoundError(f"{(self.root / split / name).absolute()}: class folder has no images "
                                        f"(.jpg, .jpeg, .png, .bmp)")
            paths += files
            labels += [index] * len(files)
        key = cache_key(paths, self.decode_size, self.mode, self.skip_bad_images)
        cache_dir = self.root / ".lab_cache"
        cached = load_cached(cache_dir, key)
        if cached is None:
            images, kept = decode_images(paths, self.decode_size, mode=self.mode, skip_bad=self.skip_bad_images)
            cached = {"x": images, "y": np.asarray(labels, dtype=np.int64)[kept]}
            save_cached(cache_dir, key, cached)
        return torch.from_numpy(cached["x"]), torch.from_numpy(cached["y"].astype(np.int64))
