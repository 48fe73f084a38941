"""Reader for the IDX format of MNIST-style datasets (optionally gzip-compressed)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (.gz or raw) into a numpy array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = data[2], data[3]
    if type_code not in _DTYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: header promises shape {shape} ({expected} bytes) but holds {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
