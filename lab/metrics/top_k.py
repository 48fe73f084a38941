"""Which top-k accuracy a classification run reports besides top-1 (task.top_k, fitted to the classes)."""

from __future__ import annotations

from lab.errors import ConfigError
from lab.train.distributed import is_rank_zero


def reported_top_k(top_k: int, num_classes: int) -> int | None:
    """The k of the top-k accuracy worth logging besides top-1, or None for top-1 only.

    With k >= the number of classes every label is among the top k, so top-k is 1.0 whatever
    the model does: a too-large `task.top_k` (the default 5 on a folder of 3 classes) is
    lowered to num_classes - 1, and dropped when that leaves nothing above top-1 (2 classes).
    Either change prints one note line saying what was asked, what is used and why."""
    if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
        raise ConfigError(f"task.top_k must be an integer >= 1, got {top_k!r}")
    top_k = int(top_k)
    if top_k == 1:
        return None
    if top_k < num_classes:
        return top_k
    lowered = num_classes - 1
    why = f"with {num_classes} classes, top-{top_k} accuracy is always 1.0"
    if is_rank_zero():
        if lowered >= 2:
            print(f"note: task.top_k={top_k} lowered to {lowered} ({why}); logging top1 and top{lowered}")
        else:
            print(f"note: task.top_k={top_k} dropped ({why}, and so is any top-k above top-1); logging top1 only")
    return lowered if lowered >= 2 else None
