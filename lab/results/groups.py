"""Jobs grouped by configuration: the same overrides but the seed and the fold, summarised as mean,
std and n.

A `seed=0,1,2` sweep (or a study) runs each configuration several times; a table of one row
per job hides the spread, and one run per cell is not a result. A k-fold sweep (`sweep=folds`:
`data.fold=0..K-1`) repeats a configuration on K train/val splits: its folds are replicates as
seeds are, so it is one row with mean ± std over the folds and n=K (seeds x folds: n = both).
Each group keeps its jobs, so every run still has its own folder and its own row in the HParams
dashboard.
The std is the sample standard deviation (ddof=1), NaN for n < 2: one run has no spread.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from lab.results.sweep import Job

# Keys that repeat a configuration rather than change it, and the table.csv column listing each
# group's values of that key.
REPLICATE_COLUMNS = {"seed": "seeds", "data.fold": "folds"}
REPLICATE_KEYS = tuple(REPLICATE_COLUMNS)


@dataclass
class Group:
    """One configuration: its parameters (seed and fold aside) and its jobs (all statuses)."""

    params: dict[str, str]
    jobs: list[Job] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        """The metric of each finished job that has a finite value of it."""
        out = []
        for job in self.jobs:
            value = job.metrics.get(metric) if job.status == "ok" else None
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out.append(float(value))
        return out

    def stats(self, metric: str) -> tuple[float, float, int]:
        """(mean, sample std, n) of the metric over the group's finished jobs; NaNs where undefined."""
        values = self.values(metric)
        n = len(values)
        mean = statistics.fmean(values) if n else math.nan
        std = statistics.stdev(values) if n >= 2 else math.nan
        return mean, std, n

    def replicates(self, key: str) -> list[str]:
        """Each job's value of replicate key `key` ('' where the sweep does not set it)."""
        return [job.params.get(key, "") for job in self.jobs]


def group_jobs(jobs: list[Job], keys: list[str], replicate: tuple[str, ...] = REPLICATE_KEYS) -> list[Group]:
    """Groups `jobs` by their values of `keys` (the varying parameters) minus `replicate`, in the
    order each configuration first appears (the sweep's order)."""
    groups: dict[tuple[Any, ...], Group] = {}
    config_keys = [k for k in keys if k not in replicate]
    for job in jobs:
        key = tuple(job.params.get(k) for k in config_keys)
        if key not in groups:
            groups[key] = Group({k: job.params.get(k, "") for k in config_keys})
        groups[key].jobs.append(job)
    return list(groups.values())


def has_replicates(jobs: list[Job], keys: list[str]) -> bool:
    """Whether some configuration ran more than once (a seed or fold sweep)."""
    return any(len(g.jobs) > 1 for g in group_jobs(jobs, keys))


def mean_std(mean: float, std: float, n: int, digits: int = 4) -> str:
    """`0.8512 ± 0.0031` (n >= 2), `0.8512` (n = 1), '' (n = 0)."""
    if n == 0 or math.isnan(mean):
        return ""
    return f"{mean:.{digits}f}" if n < 2 or math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"
