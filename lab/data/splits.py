"""Deterministic, stratified splits (same seed, same split, on every machine)."""

from __future__ import annotations

import numpy as np

from lab.utils.seeds import stream_seed


def stratified_split(labels: np.ndarray, holdout: int | float, seed: int,
                     part: str = "val") -> tuple[np.ndarray, np.ndarray]:
    """Split indices of `labels` into (keep, holdout), preserving class proportions.

    `holdout` is a count (int) or a fraction in (0, 1) (float). The draw is the "split/<part>"
    stream of `seed` (lab.utils.seeds): holding out a test part and then a val part from the
    same split seed draws two unrelated permutations.
    """
    from sklearn.model_selection import train_test_split

    n = len(labels)
    if isinstance(holdout, float) and not 0.0 < holdout < 1.0:
        raise ValueError(f"hold-out fraction must be in (0, 1), got {holdout}")
    if isinstance(holdout, int) and not 0 < holdout < n:
        raise ValueError(f"hold-out size must be in 1..{n - 1}, got {holdout}")
    keep, held = train_test_split(
        np.arange(n), test_size=holdout, random_state=stream_seed(seed, f"split/{part}", bits=32), shuffle=True,
        stratify=labels,
    )
    return np.sort(keep), np.sort(held)
