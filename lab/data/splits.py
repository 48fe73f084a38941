"""Deterministic, stratified splits (same seed, same split, on every machine)."""

from __future__ import annotations

import numpy as np

from lab.errors import ConfigError
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


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each sample of `labels`: k-fold cross-validation's partition.

    Each class's samples are put in the order of a seeded permutation (the "split/folds" stream
    of `seed`) and dealt to the folds round-robin, each class starting where the previous one
    stopped: within a class, and overall, fold sizes differ by at most 1. The caller checks that
    every class has at least `folds` samples (otherwise some fold lacks the class).
    """
    labels = np.asarray(labels)
    if folds < 2:
        raise ValueError(f"k-fold needs at least 2 folds, got {folds}")
    rng = np.random.default_rng(stream_seed(seed, "split/folds"))
    assignment = np.empty(len(labels), dtype=np.int64)
    start = 0
    for cls in np.unique(labels):  # sorted: the draw does not depend on the order classes appear in
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(len(members))]
        assignment[members] = (start + np.arange(len(members))) % folds
        start = (start + len(members)) % folds
    return assignment


def check_folds(folds: int | None, fold: int | None) -> tuple[int, int]:
    """(data.folds, data.fold) checked: folds 0/null (off) or an integer >= 2, fold in 0..folds-1."""
    def integer(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if folds in (None, 0):
        if fold not in (None, 0):
            raise ConfigError(f"data.fold={fold} needs data.folds=K (k-fold cross-validation), "
                              f"e.g. data.folds=5 data.fold={fold}")
        return 0, 0
    if not integer(folds) or folds < 2:
        raise ConfigError(f"data.folds={folds}: k-fold needs an integer number of folds >= 2 (e.g. data.folds=5), "
                          "or 0/null for the dataset's usual val split")
    if not integer(fold) or not 0 <= fold < folds:
        raise ConfigError(f"data.fold={fold} is outside 0..{folds - 1} for data.folds={folds}")
    return int(folds), int(fold)


def canonical_order(rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The samples' order by a hash of each row's bytes (a flattened image), then label: the same
    for the same samples however they were read or split (identical samples keep their order),
    and with the classes mixed, as a split is (overfit_batches trains on its first batches)."""
    import hashlib

    digests = np.fromiter((int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
                           for row in rows), dtype=np.uint64, count=len(rows))
    return np.lexsort((np.asarray(labels), digests))


def pooled_fold(rows: np.ndarray, labels: np.ndarray, folds: int, fold: int, seed: int,
                class_names=()) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices into a pool of samples (`rows`: flattened images) for fold `fold` of `folds`.

    The pool is put in canonical_order first, so the folds depend on its contents and `seed` only,
    not on how it was read or which val split it was pooled from; both index lists are in that
    order. Every class needs at least `folds` samples (ConfigError naming data.folds otherwise).
    """
    order = canonical_order(rows, labels)
    ordered = np.asarray(labels)[order]
    classes, counts = np.unique(ordered, return_counts=True)
    if len(counts) and counts.min() < folds:
        fewest, cls = int(counts.min()), int(classes[counts.argmin()])
        name = class_names[cls] if cls < len(class_names) else cls
        fix = f"use data.folds from 2 to {fewest}" if fewest >= 2 else "k-fold needs 2 of every class"
        raise ConfigError(f"data.folds={folds}: class {name!r} has {fewest} of the {len(ordered)} train+val "
                          f"samples, too few for {folds} stratified folds; {fix}")
    assignment = stratified_folds(ordered, folds, seed)
    return order[assignment != fold], order[assignment == fold]
