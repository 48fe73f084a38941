"""Which files a gallery or a query folder holds, and their labels.

The label of an image is the name of the gallery root's sub-folder it sits under
(root/<class>/.../<img>); images directly in the root have none (-1). Sub-folders are
searched recursively; hidden files and folders (".lab_cache", ".git") are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lab.data.images import IMAGE_SUFFIXES
from lab.errors import DataNotFoundError

SUFFIXES = frozenset(IMAGE_SUFFIXES | {".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"})


@dataclass
class ImageList:
    """Image files under `root`, sorted by path, with their class labels (-1: none)."""

    root: Path
    relative: list[str] = field(default_factory=list)  # POSIX paths relative to root
    labels: list[int] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)

    def paths(self) -> list[Path]:
        return [self.root / r for r in self.relative]

    @property
    def labelled(self) -> int:
        return sum(label >= 0 for label in self.labels)


def list_images(folder: str | os.PathLike) -> ImageList:
    """Every image under `folder` (recursively), labelled by its top-level sub-folder."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise DataNotFoundError(f"{root}: folder does not exist")
    if not root.is_dir():
        raise DataNotFoundError(f"{root}: not a folder (expected <folder>/<class>/<image> or <folder>/<image>)")
    root = root.resolve()
    found: list[tuple[str, str | None]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        top = rel_dir.parts[0] if rel_dir.parts else None
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in SUFFIXES:
                found.append(((rel_dir / name).as_posix(), top))
    if not found:
        raise DataNotFoundError(
            f"{root}: no images found (looked recursively for {', '.join(sorted(SUFFIXES))}; "
            "expected <folder>/<class>/<image> or <folder>/<image>)"
        )
    found.sort()
    class_names = sorted({top for _, top in found if top is not None})
    index = {name: i for i, name in enumerate(class_names)}
    return ImageList(root, [rel for rel, _ in found], [index[top] if top is not None else -1 for _, top in found],
                     class_names)
