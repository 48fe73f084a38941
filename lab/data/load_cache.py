"""A process-wide cache of the last dataset a datamodule loaded, so a sweep's jobs share one load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.data.memory import InMemoryClassificationData

_LOADED: dict[tuple, tuple[dict, dict]] = {}  # the last dataset load() returned in this process


def cached_load(data: InMemoryClassificationData) -> dict:
    """`data.load()`, reused by the next job of a sweep that reads the same files with the
    same settings: the jobs of a multirun share one process, and decoding Fashion-MNIST's
    70,000 images again for every job costs seconds per job. The key is the datamodule's
    class, the values of the attributes it names in `load_settings` (what its load() reads:
    root, split seed, split sizes; not the run's seed, batch size or augmentation) and the
    size and time of the files under its root. Attributes load() sets on the instance (class
    names, ...) are restored on a hit. One dataset is kept. Datamodules without
    `load_settings` (folders of images) are read again. The arrays are never modified in
    place (splits, noise, device moves copy)."""
    settings = getattr(type(data), "load_settings", None)
    if settings is None:
        return data.load()
    values = tuple((k, str(v) if isinstance(v, Path) else v)  # a setting a subclass lacks counts as None
                   for k, v in ((k, getattr(data, k, None)) for k in settings))
    key = (type(data).__module__, type(data).__qualname__, values, _files_stamp(getattr(data, "root", None)))
    if key in _LOADED:
        loaded, state = _LOADED[key]
        data.__dict__.update(state)
        return dict(loaded)
    before = dict(vars(data))
    loaded = data.load()
    state = {k: v for k, v in vars(data).items() if k not in before or before[k] is not v}
    _LOADED.clear()
    _LOADED[key] = (loaded, state)
    return dict(loaded)


def _files_stamp(root) -> tuple:
    """(relative path, size, mtime) of up to 200 files under `root`: a changed file misses the cache."""
    if root is None or not Path(root).is_dir():
        return ()
    stamp = []
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            stamp.append((os.path.relpath(os.path.join(folder, name), root), st.st_size, st.st_mtime_ns))
            if len(stamp) >= 200:
                return tuple(stamp)
    return tuple(stamp)
