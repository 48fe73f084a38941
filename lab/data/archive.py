"""Finding dataset files, checksum-verified downloads, and archive extraction that stays in its folder."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lab.errors import DataNotFoundError

T = TypeVar("T")


def find_or_fetch(find: Callable[[], T | None], fetch: Callable[[], str], download: bool) -> tuple[T | None, str]:
    """`find()`; when it finds nothing and `download` is on, `fetch()` (which returns ''
    or why it failed) and look again. Returns (what was found or None, why not)."""
    found = find()
    reason = "data.download is false"
    if found is None and download:
        reason = fetch() or "downloaded, but the expected files are not there"
        found = find()
    return found, reason


def torchvision_download(dataset: str, root: Path, splits: tuple[bool, ...] = (True, False)) -> str:
    """Let torchvision download (and MD5-check) `dataset` into `root`; '' or why it failed."""
    import torchvision.datasets as tvd

    try:
        for train in splits:
            getattr(tvd, dataset)(str(root), train=train, download=True)
    except Exception as err:  # no network, mirror down, checksum mismatch
        return f"{type(err).__name__}: {err}".splitlines()[0]
    return ""


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: Path, md5: str) -> None:
    """Fetch `url` to `target` (through a .part file) and check its MD5."""
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    with urllib.request.urlopen(url, timeout=30) as response, open(part, "wb") as out:
        while block := response.read(1 << 20):
            out.write(block)
    got = md5sum(part)
    if got != md5:
        part.unlink(missing_ok=True)
        raise DataNotFoundError(f"{url}: checksum mismatch (md5 {got}, expected {md5}); the download was deleted")
    part.replace(target)


def safe_extract_zip(archive: str | Path, target: str | Path) -> None:
    """Extract a zip into `target`, refusing (before writing anything) any member whose
    path is absolute or climbs out of `target` with '..'."""
    target = Path(target).resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            name = member.filename
            dest = (target / name).resolve()
            if Path(name).is_absolute() or name.startswith(("/", "\\")) or not dest.is_relative_to(target):
                raise DataNotFoundError(f"{archive}: member {name!r} would be written outside {target}; refusing")
        zf.extractall(target)
