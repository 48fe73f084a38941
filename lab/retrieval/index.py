"""The on-disk index: a folder holding features.npy and index.json, loaded without pickle.

- features.npy: float32 [N, D], unit-length rows (np.load(allow_pickle=False));
- index.json: the gallery root, each image's path relative to it, labels (-1: none),
  class names, the backbone (name, weights, checksum), the preprocessing, the feature
  dimension and the creation date.

Writes go to a hidden temporary folder beside the target that is renamed into place, so
a crash never leaves a half-written index; an existing index is only replaced on request.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lab.errors import DataNotFoundError, LabError

if TYPE_CHECKING:
    import torch

FORMAT = "lab.retrieve index"
VERSION = 1
FEATURES = "features.npy"
META = "index.json"
REQUIRED = ("root", "paths", "labels", "class_names", "backbone", "preprocess", "feature_dim", "count")


class IndexFileError(LabError):
    """An index folder that is missing, corrupt or of another format."""


@dataclass
class RetrievalIndex:
    path: Path
    features: np.ndarray  # float32 [N, D], unit rows
    meta: dict[str, Any]

    @property
    def root(self) -> Path:
        return Path(self.meta["root"])

    @property
    def relative(self) -> list[str]:
        return self.meta["paths"]

    @property
    def labels(self) -> list[int]:
        return self.meta["labels"]

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    def paths(self) -> list[Path]:
        root = self.root
        return [root / r for r in self.relative]

    def tensor(self) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.features)


def is_index(path: Path) -> bool:
    return (path / META).is_file()


def check_writable(out: Path, force: bool) -> None:
    """Fail before any encoding work when `out` exists and may not be replaced."""
    if out.exists():
        if not force:
            raise LabError(f"{out} already exists; pass --force to replace it, or choose another --out")
        if not out.is_dir() or not is_index(out):
            raise LabError(f"{out} exists and is not a retrieval index; --force only replaces an index")
    if not out.parent.exists():
        raise DataNotFoundError(f"{out.parent}: folder for --out does not exist")


def save_index(out: Path, features: np.ndarray, meta: dict[str, Any], force: bool = False) -> Path:
    """Write features.npy and index.json into a temporary folder, then rename it to `out`."""
    check_writable(out, force)
    features = np.ascontiguousarray(features, dtype=np.float32)
    meta = {"format": FORMAT, "version": VERSION, **meta, "count": int(features.shape[0]),
            "feature_dim": int(features.shape[1]), "dtype": "float32"}
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        with open(tmp / FEATURES, "wb") as f:
            np.save(f, features, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / META, "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        old = None
        if out.exists():  # --force: move the old index aside, put the new one in place, drop the old
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / "index")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_index(path: str | os.PathLike) -> RetrievalIndex:
    """Read an index folder (or its index.json); every problem is one line naming the file."""
    path = Path(path).expanduser()
    if path.is_file() and path.name == META:
        path = path.parent
    if not path.exists():
        raise DataNotFoundError(f"{path}: no such index (build one with python -m lab.retrieve index "
                                f"--images <folder> --out {path})")
    meta_file, features_file = path / META, path / FEATURES
    if not path.is_dir() or not meta_file.is_file():
        raise IndexFileError(f"{meta_file}: missing; {path} is not a lab.retrieve index")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IndexFileError(f"{meta_file}: not a readable index file ({type(err).__name__}: {err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise IndexFileError(f"{meta_file}: not a lab.retrieve index (format {found!r}, expected {FORMAT!r})")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise IndexFileError(f"{meta_file}: index version {meta.get('version')!r} is not one this lab reads "
                             f"(1..{VERSION})")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise IndexFileError(f"{meta_file}: index is missing {', '.join(missing)}")
    try:
        features = np.load(features_file, allow_pickle=False)
    except FileNotFoundError:
        raise IndexFileError(f"{features_file}: missing from the index") from None
    except (OSError, ValueError, EOFError) as err:
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        raise IndexFileError(f"{features_file}: not a valid features file ({reason}); build the index again") from None
    try:
        count, dim = int(meta["count"]), int(meta["feature_dim"])
        paths, labels, names = list(meta["paths"]), list(meta["labels"]), list(meta["class_names"])
        dict(meta["backbone"]), dict(meta["preprocess"])
    except (TypeError, ValueError) as err:
        raise IndexFileError(f"{meta_file}: malformed index ({type(err).__name__}: {err})") from None
    if features.dtype not in (np.float32, np.float16) or features.shape != (count, dim):
        raise IndexFileError(f"{features_file}: expected float32 [{count}, {dim}], found {features.dtype} "
                             f"{list(features.shape)}; build the index again")
    if len(paths) != count or len(labels) != count:
        raise IndexFileError(f"{meta_file}: {len(paths)} paths and {len(labels)} labels for {count} features")
    if any(not isinstance(v, int) or not -1 <= v < len(names) for v in labels):
        raise IndexFileError(f"{meta_file}: labels out of range of the {len(names)} class names")
    return RetrievalIndex(path, features.astype(np.float32, copy=False), meta)
