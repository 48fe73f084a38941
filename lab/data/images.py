"""Decoding folders of image files into one uint8 array, once, with a cache."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lab.errors import DataNotFoundError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class BadImageError(DataNotFoundError):
    """An image file that cannot be decoded."""


def list_images(folder: Path) -> list[Path]:
    """Image files (by suffix, case-insensitive) directly in `folder`, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _decode(path: Path, size: tuple[int, int] | None, mode: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert(mode)
        if size is not None and img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.BILINEAR)
        array = np.asarray(img, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def decode_images(
    paths: Sequence[Path], size: tuple[int, int] | None, mode: str = "RGB", skip_bad: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode `paths` into (uint8 [N, C, H, W], kept mask [len(paths)]).

    A file that cannot be decoded raises BadImageError naming it, or with `skip_bad`
    is left out with a warning (the count is logged). Without `size`, all images must
    share one size.
    """
    from PIL import UnidentifiedImageError

    def work(path: Path):
        try:
            return _decode(path, size, mode)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            return err

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = list(pool.map(work, paths))
    kept = np.array([not isinstance(r, Exception) for r in results], dtype=bool)
    bad = [(p, r) for p, r in zip(paths, results) if isinstance(r, Exception)]
    if bad and not skip_bad:
        path, err = bad[0]
        raise BadImageError(
            f"{path}: cannot decode image ({type(err).__name__}: {err}); fix or remove it, "
            f"or pass data.skip_bad_images=true to skip unreadable files ({len(bad)} found)"
        )
    if bad:
        log.warning("skipped %d unreadable image(s), first: %s", len(bad), bad[0][0])
        print(f"warning: skipped {len(bad)} unreadable image(s) (data.skip_bad_images=true), first: {bad[0][0]}")
    arrays = [r for r in results if not isinstance(r, Exception)]
    if not arrays:
        return np.zeros((0, 3 if mode == "RGB" else 1, *(size or (1, 1))), dtype=np.uint8), kept
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        example = next(p for p, r in zip(paths, results) if not isinstance(r, Exception) and r.shape != arrays[0].shape)
        raise DataNotFoundError(
            f"{example}: image size {shapes} differ across files; set data.image_size=<int or [h, w]> to resize"
        )
    return np.stack(arrays), kept


def cache_key(paths: Sequence[Path], *extra: object) -> str:
    """A digest of the file list (names, sizes, mtimes) and the decode options."""
    digest = hashlib.sha1()
    for p in paths:
        st = p.stat()
        digest.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    digest.update(repr(extra).encode())
    return digest.hexdigest()[:16]


def load_cached(cache_dir: Path, key: str) -> dict[str, np.ndarray] | None:
    path = cache_dir / f"{key}.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save_cached(cache_dir: Path, key: str, arrays: dict[str, np.ndarray]) -> Path | None:
    """Write the arrays atomically; a read-only data folder just means no cache."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{key}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **arrays)
        final = cache_dir / f"{key}.npz"
        os.replace(tmp, final)
        return final
    except OSError as err:
        log.warning("could not write the decode cache in %s (%s); the next run decodes again", cache_dir, err)
        return None
