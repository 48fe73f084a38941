"""The results table of a sweep that ran some configuration more than once (a seed or k-fold sweep):
one row per configuration, each metric as `mean ± std` over its finished runs, `n`, and a status.

A configuration is a value of every varying parameter but the seed and data.fold
(lab.results.groups.REPLICATE_KEYS): a 5-fold sweep is one row, mean ± std over the folds, n=5. The
std is the sample standard deviation (ddof=1), left out when n = 1. A metric averaged over fewer
runs than n (a run without a finite value of it) says so in its cell: `0.8512 (n=1)`. table.md is
this table; table.csv has one row per configuration with `<metric>` (the mean), `<metric>_std` and
`n` at full precision, and the jobs' `seeds` or `folds`; the per-job table (lab.results.table)
goes to jobs.md and jobs.csv. The best configuration is the one with the best mean of the
objective (task.objective). Without replicates, or for an Optuna study (whose best trial is one
trial), lab.report shows the per-job table only. Cheap to import: rich loads when a table is printed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.results.groups import REPLICATE_COLUMNS, REPLICATE_KEYS, Group, group_jobs, has_replicates, mean_std
from lab.results.sweep import ReportError
from lab.results.table import (
    DETAIL_WIDTH,
    TABLE_CSV,
    TABLE_MD,
    Rendered,
    Table,
    higher_first,
    maybe_float,
    short,
    usable,
)

JOBS_MD, JOBS_CSV = "jobs.md", "jobs.csv"  # the per-job table, beside a grouped table.md / table.csv


@dataclass
class Best:
    """The configuration with the best mean objective: its group and (key, mean, std, n)."""

    group: Group
    key: str
    mean: float
    std: float
    n: int


@dataclass
class GroupedTable(Rendered):
    """One row per configuration of a table's jobs; to_markdown/to_csv/to_rich/records render it."""

    key_column = "n"  # right-aligned like the metrics

    table: Table  # the per-job table (jobs.md, jobs.csv), sorted as asked
    params: list[str]  # the varying parameters but the replicate keys (seed, data.fold)
    groups: list[Group]
    sort: tuple[str, bool] | None = None  # (key, ascending) when rows are sorted

    @property
    def sweep(self):
        return self.table.sweep

    @property
    def metrics(self) -> list[str]:
        return self.table.metrics

    @property
    def columns(self) -> list[str]:
        return [*self.params, *self.metrics, "n", "status"]

    def label(self, group: Group) -> str:
        """`key=value, ...` of the configuration (legend and best-line text)."""
        return ", ".join(f"{k}={short(group.params.get(k, ''))}" for k in self.params) or "every job"

    def cells(self, group: Group) -> list[str]:
        """The formatted cells of one row, in `columns` order."""
        finished = finished_count(group)
        values = []
        for metric in self.metrics:
            mean, std, n = group.stats(metric)
            cell = format_mean_std(metric, mean, std, n)
            values.append(cell + (f" (n={n})" if cell and n < finished else ""))
        status = group_status(group)
        if len(status) > DETAIL_WIDTH:
            status = status[: DETAIL_WIDTH - 1] + "…"
        return [*(short(group.params.get(k, "")) for k in self.params), *values, str(finished), status]

    def records(self) -> list[dict[str, Any]]:
        """One dict per configuration: parameters, `<metric>` (mean), `<metric>_std`, n, status, error,
        the job numbers and seeds (folds); floats at full precision, None where a value is undefined."""
        replicates = [k for k in REPLICATE_KEYS if k in self.sweep.keys]
        keys = self.params + [k for k in self.sweep.keys if k not in self.params and k not in replicates]
        rows = []
        for group in self.groups:
            row: dict[str, Any] = {k: group.jobs[0].params.get(k) for k in keys}
            for metric in self.metrics:
                mean, std, n = group.stats(metric)
                row[metric] = mean if n else None
                row[f"{metric}_std"] = std if n >= 2 else None
            row["n"] = finished_count(group)
            row["status"] = group_status(group, errors=False)
            row["error"] = first_error(group)
            row["jobs"] = " ".join("" if job.num is None else str(job.num) for job in group.jobs)
            row.update({REPLICATE_COLUMNS[k]: " ".join(group.replicates(k))
                        for k in replicates})
            rows.append(row)
        return rows

    def best(self) -> Best | None:
        """The configuration with the best mean objective (its `_best` key when the runs logged it, else the
        metric), the first in launch order on a tie; None when no finished run has a value."""
        objective = self.sweep.objective
        finished = [job for g in self.groups for job in g.jobs if job.status == "ok"]
        key = next((k for k in (objective.best_key, objective.metric)
                    if any(job.metrics.get(k) is not None for job in finished)), None)
        best = None
        for group in sorted(self.groups, key=_launch_order):
            mean, std, n = group.stats(key) if key else (math.nan, math.nan, 0)
            if n and (best is None or objective.better(mean, best.mean)):
                best = Best(group, key, mean, std, n)
        return best

    def heading(self) -> list[str]:
        """The per-job table's lines above the table, with the grouping and the best configuration."""
        lines = self.table.heading()
        sizes = sorted({len(g.jobs) for g in self.groups})
        times = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
        over = ", ".join(k for k in REPLICATE_KEYS if k in self.sweep.varying)
        lines[0] = (f"Sweep `{self.sweep.path.name}`: {self.sweep.summary()}; {len(self.groups)} configuration"
                    f"{'s' if len(self.groups) != 1 else ''} × {times} runs{f' ({over})' if over else ''}")
        if self.sort:
            key = self.sort[0]
            what = key if key in self.sweep.keys or key == "job" else f"{key} mean"
            lines[0] += f", sorted by {what} ({'ascending' if self.sort[1] else 'descending'})"
        best = self.best() if len(self.groups) > 1 else None
        if best is not None:
            lines.append(f"Best by {best.key} (mean): {self.label(best.group)}, "
                         f"{format_mean_std(best.key, best.mean, best.std, best.n)} (n={best.n})")
        lines.append(f"One row per configuration: mean ± std (sample std) over its finished runs, n of them; "
                     f"one row per job in {JOBS_MD} and {JOBS_CSV}")
        return lines

    def to_markdown(self) -> str:
        def row(cells: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

        heading = self.heading()
        align = [*(["---"] * len(self.params)), *(["---:"] * (len(self.metrics) + 1)), "---"]
        lines = [line + "  " for line in heading[:-1]] + heading[-1:]
        lines += ["", row(self.columns), "|" + "|".join(align) + "|"]
        lines += [row(self.cells(group)) for group in self.groups]
        return "\n".join(lines) + "\n"

    def rows(self) -> list[tuple[list[str], str]]:
        """(cells, status style) per configuration: red with a failed run, yellow with a missing one."""
        out = []
        for group in self.groups:
            statuses = {job.status for job in group.jobs}
            style = "red" if "failed" in statuses else "yellow" if "missing" in statuses else "green"
            out.append((self.cells(group), style))
        return out

    def csv_fields(self) -> list[str]:
        return [*self.params, *self.metrics, "n", "status"]


def group_table(table: Table, sort: str | None = None, reverse: bool = False) -> GroupedTable | None:
    """The grouped table of `table`'s jobs, or None when no configuration ran more than once (or the
    sweep is an Optuna study). `sort` orders the configurations by a metric's mean (best first, as
    lab.report --sort), a parameter (ascending) or `job` (launch order); `reverse` flips it;
    configurations without a mean stay last."""
    sweep = table.sweep
    if sweep.optuna is not None or not has_replicates(sweep.jobs, table.params):
        return None
    params = [k for k in table.params if k not in REPLICATE_KEYS]
    grouped = GroupedTable(table, params, group_jobs(sweep.jobs, table.params))
    if sort:
        grouped.groups, ascending = _sorted(grouped, sort, reverse)
        grouped.sort = (sort, ascending)
    return grouped


def _sorted(grouped: GroupedTable, key: str, reverse: bool) -> tuple[list[Group], bool]:
    sweep, groups = grouped.sweep, grouped.groups
    if key in REPLICATE_KEYS:
        raise ReportError(f"--sort {key}: each row holds every {key} of a configuration; sort by a metric "
                          f"(its mean) or one of: {', '.join(['job', *grouped.params])}")
    if key == "job":
        return sorted(groups, key=_launch_order, reverse=reverse), not reverse
    if key in sweep.keys:
        values = {id(g): maybe_float(g.jobs[0].params.get(key)) for g in groups}
        descending = False
    else:  # a metric (build_table has checked the name)
        values = {id(g): g.stats(key)[0] for g in groups}
        descending = higher_first(sweep, key)
    present = [g for g in groups if usable(values[id(g)])]
    absent = [g for g in groups if g not in present]
    descending = descending != reverse
    present.sort(key=lambda g: (isinstance(values[id(g)], str), values[id(g)]), reverse=descending)
    return present + absent, not descending


def _launch_order(group: Group) -> int:
    return min((job.num for job in group.jobs if job.num is not None), default=1 << 30)


def finished_count(group: Group) -> int:
    """n: the group's finished (`ok`) runs."""
    return sum(job.status == "ok" for job in group.jobs)


def first_error(group: Group) -> str:
    """The error of the group's first failed job ('' if none failed)."""
    return next((job.detail for job in group.jobs if job.status == "failed"), "")


def group_status(group: Group, errors: bool = True) -> str:
    """`3 ok`, `2 ok, 1 missing`, `2 ok, 1 failed: <the first failed job's error>` (failed last, so
    the error ends the text); without `errors`, the counts only."""
    counts = {status: sum(job.status == status for job in group.jobs) for status in ("ok", "missing", "failed")}
    text = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    return text + (f": {first_error(group)}" if errors and counts["failed"] else "")


def format_mean_std(key: str, mean: float, std: float, n: int) -> str:
    """`0.8512 ± 0.0031` (lab.results.groups.mean_std), in the precision the per-job table gives the
    metric: seconds to 0.1, counts to 0.01, very large or small values in scientific notation."""
    if n == 0 or math.isnan(mean):
        return ""
    last = key.split("/")[-1]
    size = abs(mean)
    if key == "wall_time_s" or last in ("best_epoch", "epochs"):
        spec = ".1f" if key == "wall_time_s" else ".2f"
    elif size and (size >= 1e5 or size < 1e-3) and math.isfinite(mean):
        spec = ".3e"
    else:
        return mean_std(mean, std, n)
    return f"{mean:{spec}}" if n < 2 or math.isnan(std) else f"{mean:{spec}} ± {std:{spec}}"


def write_grouped(grouped: GroupedTable) -> tuple[Path, Path, Path, Path]:
    """table.md and table.csv (one row per configuration), jobs.md and jobs.csv (one row per job)."""
    from lab.utils.io import atomic_write_text

    folder = grouped.sweep.path
    paths = (folder / TABLE_MD, folder / TABLE_CSV, folder / JOBS_MD, folder / JOBS_CSV)
    for path, text in zip(paths, (grouped.to_markdown(), grouped.to_csv(), grouped.table.to_markdown(),
                                  grouped.table.to_csv())):
        atomic_write_text(path, text)
    return paths
