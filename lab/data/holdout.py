"""Hold-out sizes (`data.val_size`): a count of samples or a fraction of them.

A count suits one known dataset; a fraction also fits a class subset or a smaller copy of it.
Either way the size that is used must leave a stratified split possible (at least one sample
of every class on both sides), so a too-small fraction is raised to one per class with a
note, and a size that cannot work stops with one line naming the key.
"""

from __future__ import annotations

from typing import Any

from lab.errors import ConfigError


def check_holdout(key: str, value: object) -> int | float:
    """A count (int >= 1) or a fraction (float in (0, 1)); anything else is a ConfigError naming `key`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and 0.0 < value < 1.0:
            return float(value)
        if value >= 1 and value == int(value):
            return int(value)
    raise ConfigError(f"{key} must be a number of samples (an integer >= 1) or a fraction in (0, 1) such as 0.1, "
                      f"got {value!r}")


def holdout_count(key: str, value: int | float, labels: Any, what: str = "training samples") -> int:
    """How many of `labels` to hold out for `key`'s value: a fraction rounded (at least one per class,
    with a note when raised), a count as it is. Both sides of the split must keep every class."""
    import numpy as np

    from lab.train.distributed import is_rank_zero

    value = check_holdout(key, value)
    labels = np.asarray(labels)
    n = len(labels)
    classes, counts = np.unique(labels, return_counts=True)
    k = len(classes)
    if n and counts.min() < 2:
        raise ConfigError(f"{key}={value}: class {int(classes[counts.argmin()])} has {int(counts.min())} of the "
                          f"{n} {what}; a stratified hold-out needs at least 2 of every class")
    most = n - k  # every class keeps at least one sample on the training side
    if isinstance(value, float):
        count = int(round(value * n))
        if count < k:
            if is_rank_zero():
                print(f"note: {key}={value} of {n} {what} is {count}, fewer than one per class; "
                      f"holding out {k} (one of each of the {k} classes)")
            count = k
        return min(count, most)
    if not k <= value <= most:
        raise ConfigError(f"{key}={value} does not fit {n} {what} of {k} classes: use a count from {k} to {most}, "
                          f"or a fraction such as 0.1")
    return value
