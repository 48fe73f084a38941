"""Your own images: root/<split>/<class>/*.{jpg,jpeg,png,bmp}."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lab.data.augment import as_size
from lab.data.images import cache_key, decode_images, list_images, load_cached, save_cached
from lab.data.memory import InMemoryClassificationData
from lab.errors import ConfigError, DataNotFoundError


class ImageFolderDataModule(InMemoryClassificationData):
    """Splits are sub-folders of `root` (`train_split`, `val_split`, `test_split`);
    classes are their sub-folders and must be the same set in every split used.

    `extra_train_splits=[val, addition]` merges those splits into training (then point
    `val_split` at another one); `classes=[...]` keeps a subset (names or indices into
    the sorted class list); images are resized to `image_size` when decoded and cached
    in `<root>/.lab_cache/`.
    """

    def __init__(self, name: str = "imagefolder", root: str = "data/images", image_size: int | list[int] | None = 112,
                 train_split: str = "train", val_split: str = "val", test_split: str = "test",
                 extra_train_splits: Sequence[str] = (), classes: Sequence[str | int] | None = None,
                 skip_bad_images: bool = False, grayscale: bool = False, **common) -> None:
        super().__init__(**common)
        self.name = name
        self.root = Path(root).expanduser()
        self.decode_size = as_size(image_size)
        self.train_split, self.val_split, self.test_split = train_split, val_split, test_split
        self.extra_train_splits = list(extra_train_splits or [])
        self.classes = list(classes) if classes else None
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

    def _select_classes(self, all_names: list[str]) -> list[str]:
        if not self.classes:
            return all_names
        chosen = []
        for c in self.classes:
            if isinstance(c, int) and not isinstance(c, bool):
                if not 0 <= c < len(all_names):
                    raise ConfigError(f"data.classes: index {c} out of range 0..{len(all_names) - 1}")
                chosen.append(all_names[c])
            elif str(c) in all_names:
                chosen.append(str(c))
            else:
                raise ConfigError(f"data.classes: unknown class {c!r}; classes are {all_names}")
        if len(set(chosen)) != len(chosen):
            raise ConfigError(f"data.classes lists a class twice: {self.classes}")
        return chosen

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if not self.root.is_dir():
            raise DataNotFoundError(
                f"imagefolder: {self.root.absolute()} does not exist "
                "(expected <root>/{train,val,test}/<class>/*.jpg|png)"
            )
        used = [self.train_split, *self.extra_train_splits, self.val_split, self.test_split]
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
        self.class_names = self._select_classes(reference)
        arrays = {s: self._decode_split(s) for s in used}
        train_parts = [arrays[s] for s in [self.train_split, *self.extra_train_splits]]
        train = (torch.cat([p[0] for p in train_parts]), torch.cat([p[1] for p in train_parts]))
        return {"train": train, "val": arrays[self.val_split], "test": arrays[self.test_split]}

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
