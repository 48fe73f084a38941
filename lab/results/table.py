"""The results table of a sweep: which metric columns, the rows' order, and the table as text.

Columns: the job number, the overridden parameters that *vary* across jobs, the metrics,
the status. Keys overridden to the same value for every job are printed once above the
table instead, so a sweep of one knob has one parameter column however long its command
line was; table.csv (for machines, full precision) keeps every overridden key as a column,
plus the job folder, and splits status and error. The sweep's objective (task.objective)
ranks the jobs: an Optuna study's objective is its first column and its best trial is named
above the table. A sweep that ran a configuration more than once shows one row per
configuration instead (lab.results.grouped_table); this per-job table then goes to jobs.md
and jobs.csv. Cheap to import: rich loads when a table is printed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.results.sweep import Job, ReportError, Sweep
from lab.runs.folder import OPTUNA_RESULTS

# Shown by default when at least one job has them, in this order.
STANDARD_METRICS = (
    "val/loss", "val/top1", "val/top5", "val/mse", "val/r2",
    "test/loss", "test/top1", "test/top5", "test/mse", "test/r2",
    "best_epoch", "wall_time_s",
)
# The columns of a sweep where no job has finished yet.
FALLBACK_METRICS = ("val/loss", "val/top1", "val/top5", "test/loss", "test/top1", "test/top5",
                    "best_epoch", "wall_time_s")
# Sorting by these puts the highest first (accuracies, R^2); the objective follows its mode; the rest lowest first.
_HIGHER_IS_BETTER = re.compile(r"^(top\d+(_best)?|acc\w*|r2(_best)?|f1\w*|auroc|precision|recall)$")
_INT_KEYS = {"best_epoch", "epochs", "seed"}
DETAIL_WIDTH = 100  # error text in the printed and markdown tables (table.csv keeps all of it)
TABLE_MD, TABLE_CSV = "table.md", "table.csv"  # written into the sweep folder


class Rendered:
    """to_csv and to_rich of a table that has records(), heading(), columns, metrics, rows() and
    csv_fields(): shared by the per-job table and the grouped one (lab.results.grouped_table)."""

    key_column = "job"  # right-aligned like the metrics

    def to_csv(self) -> str:
        import csv
        import io

        records = self.records()
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else self.csv_fields(), lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({k: "" if v is None else v for k, v in record.items()})
        return out.getvalue()

    def to_rich(self, console=None):
        """The heading lines and the table, as one rich renderable (sized for `console` if given)."""
        from rich.console import Group
        from rich.text import Text

        table = self._rich_table(None)
        if console is not None:
            natural = console.measure(table, options=console.options.update_width(100_000)).maximum
            if natural > console.width:  # rich would squeeze the wrappable status column to nothing
                table = self._rich_table(min(40, max([len("status"), *(len(cells[-1]) for cells, _ in self.rows())])))
        return Group(*(Text(line) for line in self.heading()), table)

    def _rich_table(self, status_width: int | None):
        from rich.table import Table as RichTable

        table = RichTable(header_style="bold")
        for column in self.columns:
            numeric = column == self.key_column or column in self.metrics
            table.add_column(column, justify="right" if numeric else "left", no_wrap=column != "status",
                             overflow="fold", width=status_width if column == "status" else None)
        for cells, style in self.rows():
            table.add_row(*cells[:-1], f"[{style}]{escape(cells[-1])}[/]")
        return table


@dataclass
class Table(Rendered):
    """The rows and columns of a report; to_markdown/to_csv/records render it."""

    sweep: Sweep
    params: list[str]
    metrics: list[str]
    jobs: list[Job]
    sort: tuple[str, bool] | None = None  # (key, ascending) when rows are sorted

    @property
    def columns(self) -> list[str]:
        return ["job", *self.params, *self.metrics, "status"]

    def label(self, job: Job) -> str:
        """`key=value, ...` of the job's varying parameters (legend text); `job N` if none vary."""
        return ", ".join(f"{k}={short(job.params.get(k, ''))}" for k in self.params) or f"job {job.num}"

    def records(self) -> list[dict[str, Any]]:
        """One dict per row, raw values (floats at full precision, None where a value is absent)."""
        keys = self.params + [k for k in self.sweep.keys if k not in self.params]
        rows = []
        for job in self.jobs:
            row: dict[str, Any] = {"job": job.num}
            row.update({k: job.params.get(k) for k in keys})
            row.update({m: job.metrics.get(m) for m in self.metrics})
            row["status"] = job.status
            row["error"] = job.detail if job.status != "ok" else ""
            row["dir"] = str(job.dir.relative_to(self.sweep.path)) if job.dir else ""
            rows.append(row)
        return rows

    def cells(self, job: Job) -> list[str]:
        """The formatted cells of one row, in `columns` order."""
        status = job.status_text
        if len(status) > DETAIL_WIDTH:
            status = status[: DETAIL_WIDTH - 1] + "…"
        return ["" if job.num is None else str(job.num), *(short(job.params.get(k, "")) for k in self.params),
                *(format_value(m, job.metrics.get(m)) for m in self.metrics), status]

    def heading(self) -> list[str]:
        """The lines above the table: the command, the fixed overrides, the counts."""
        import shlex

        lines = [f"Sweep `{self.sweep.path.name}`: {self.sweep.summary()}"]
        if self.sort:
            lines[0] += f", sorted by {self.sort[0]} ({'ascending' if self.sort[1] else 'descending'})"
        if self.sweep.command:
            lines.append(f"Command: `python -m lab.run -m {' '.join(shlex.quote(o) for o in self.sweep.command)}`")
        if self.sweep.fixed and self.sweep.varying:
            lines.append("Same for every job: " + ", ".join(f"`{k}={v}`" for k, v in self.sweep.fixed.items()))
        if self.sweep.optuna is not None:
            lines.append(_optuna_line(self.sweep))
        if self.sweep.note:
            lines.append(f"Note: {self.sweep.note}")
        return lines

    def to_markdown(self) -> str:
        def row(cells: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

        align = ["---:", *(["---"] * len(self.params)), *(["---:"] * len(self.metrics)), "---"]
        lines = [line + "  " for line in self.heading()[:-1]] + self.heading()[-1:]
        lines += ["", row(self.columns), "|" + "|".join(align) + "|"]
        lines += [row(self.cells(job)) for job in self.jobs]
        return "\n".join(lines) + "\n"

    def rows(self) -> list[tuple[list[str], str]]:
        """(cells, status style) per row, for the printed table."""
        styles = {"ok": "green", "failed": "red", "missing": "yellow"}
        return [(self.cells(job), styles[job.status]) for job in self.jobs]

    def csv_fields(self) -> list[str]:
        return ["job", *self.metrics, "status", "error", "dir"]  # the header of a table with no rows


def _optuna_line(sweep: Sweep) -> str:
    """`Optuna study (maximize, 20 trials): best job 7, value 0.9852 (optimization_results.yaml)`.

    lab's optuna config records its direction as `${lab_direction:${task.objective.mode}}`: the objective's.
    """
    study = sweep.optuna or {}
    direction = study.get("direction")
    direction = "/".join(map(str, direction)) if isinstance(direction, list) else direction
    if isinstance(direction, str) and "${" in direction:
        direction = sweep.objective.direction
    about = ", ".join(x for x in (str(direction or ""), f"{study['n_trials']} trials" if study.get("n_trials")
                                  else "") if x)
    line = "Optuna study" + (f" ({about})" if about else "") + ": "
    results = study.get("results")
    if study.get("error"):
        return line + study["error"]
    if results is None:
        line += f"running or stopped ({OPTUNA_RESULTS} is written when the study ends)"
        best = best_job(sweep)
        if best is None:
            return line
        key = next(k for k in (sweep.objective.best_key, sweep.objective.metric) if best.metrics.get(k) is not None)
        return line + f"; best so far: job {best.num}, {key} {format_value(key, best.metrics[key])}"
    if "best_value" not in results:
        return line + f"{len(results.get('solutions') or [])} Pareto-optimal trials ({OPTUNA_RESULTS})"
    best = {str(k): v for k, v in (results.get("best_params") or {}).items()}
    jobs = [job.num for job in sweep.jobs if job.status == "ok" and _same_params(job.params, best)]
    which = f"job {jobs[0]}" if jobs else ", ".join(f"{k}={v}" for k, v in best.items())
    return line + f"best {which}, value {format_value('', results['best_value'])} ({OPTUNA_RESULTS})"


def _same_params(params: dict[str, str], best: dict[str, Any]) -> bool:
    """Whether a job's overrides hold the trial's parameters (written by Optuna as Python values)."""
    for key, value in best.items():
        if key not in params:
            return False
        mine, theirs = maybe_float(params[key]), value
        if isinstance(mine, float) and isinstance(theirs, (int, float)) and not isinstance(theirs, bool):
            if not math.isclose(mine, float(theirs), rel_tol=1e-12):
                return False
        elif str(params[key]) != str(value):
            return False
    return True


def short(value: str) -> str:
    """A long float parameter (Optuna's 0.0013292918943162175) to 4 significant digits for the
    printed and markdown tables; values as typed on a command line stay as they are."""
    if len(value) <= 8:
        return value
    number = maybe_float(value)
    return f"{number:.4g}" if isinstance(number, float) and math.isfinite(number) else value


def escape(text: str) -> str:
    """Text for a rich markup cell."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def format_value(key: str, value: Any) -> str:
    """A metric as the tables show it: 4 decimals, seconds to 0.1, counts as integers, nan as nan."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if key.split("/")[-1] in _INT_KEYS and value.is_integer():
        return str(int(value))
    if key == "wall_time_s":
        return f"{value:.1f}"
    size = abs(value)
    return f"{value:.3e}" if size and (size >= 1e5 or size < 1e-3) else f"{value:.4f}"


def available_metrics(sweep: Sweep) -> list[str]:
    """Every metric key some job has: the standard ones first, then the rest alphabetically."""
    keys = {k for job in sweep.jobs for k in job.metrics}
    standard = _standard_metrics(keys)
    return standard + sorted(keys - set(standard))


def _standard_metrics(keys: set[str]) -> list[str]:
    """STANDARD_METRICS present in `keys`, where {val,test}/top5 stands for whichever top-k the runs
    logged (task.top_k, lowered below the number of classes: top2 on 3 classes; none on 2)."""
    chosen = []
    for name in STANDARD_METRICS:
        if name.endswith("/top5"):
            split = name.split("/")[0]
            chosen += sorted((k for k in keys if re.fullmatch(rf"{split}/top([2-9]|\d\d+)", k)),
                             key=lambda k: int(k.rsplit("top", 1)[1]))
        elif name in keys:
            chosen.append(name)
    return chosen


def select_metrics(sweep: Sweep, requested: list[str] | None = None) -> list[str]:
    """The metric columns: the standard ones present, or `requested` (names or globs like val/*)."""
    import fnmatch

    available = available_metrics(sweep)
    if not requested:
        chosen = _standard_metrics(set(available))
        objective = next((k for k in (sweep.objective.best_key, sweep.objective.metric) if k in available), None)
        if sweep.optuna is not None and objective:  # what the study optimizes (lab.run returns it)
            chosen = [objective, *(k for k in chosen if k != objective)]
        if not chosen:
            chosen = [k for k in available if k.startswith(("val/", "test/"))]
        return chosen or list(FALLBACK_METRICS)
    chosen = []
    for item in requested:
        for name in (part.strip() for part in item.split(",")):
            if not name:
                continue
            if any(ch in name for ch in "*?["):
                matches = [k for k in available if fnmatch.fnmatchcase(k, name)]
                if not matches and available:
                    raise ReportError(f"--metrics {name}: matches no metric; the jobs have: {', '.join(available)}")
            else:
                if available and name not in available:
                    have = ", ".join(available)
                    raise ReportError(f"--metrics {name}: no job has this metric; the jobs have: {have}")
                matches = [name]
            chosen += [m for m in matches if m not in chosen]
    return chosen


def build_table(sweep: Sweep, metrics: list[str] | None = None, sort: str | None = None,
                reverse: bool = False) -> Table:
    """Rows in launch order, or sorted by a metric (best first) or a parameter (ascending).

    "Best first" follows task.objective's mode for the objective (val/mse and val/mse_best:
    lowest first in regression), highest first for other accuracies and R^2, lowest first for
    anything else (losses, errors, times); `reverse` flips it. Rows without a value (failed,
    missing, nan) always come last, in launch order.
    """
    table = Table(sweep, sweep.varying, select_metrics(sweep, metrics), list(sweep.jobs))
    if sort:
        table.jobs, ascending = _sorted(table, sort, reverse)
        table.sort = (sort, ascending)
    return table


def _sorted(table: Table, key: str, reverse: bool) -> tuple[list[Job], bool]:
    sweep = table.sweep
    if key == "job":
        values = {id(job): job.num for job in table.jobs}
        descending = False
    elif key in sweep.keys:
        values = {id(job): maybe_float(job.params.get(key)) for job in table.jobs}
        descending = False
    elif key in available_metrics(sweep) or key in table.metrics:
        values = {id(job): job.metrics.get(key) for job in table.jobs}
        descending = higher_first(sweep, key)
    else:
        names = ["job", *sweep.keys, *available_metrics(sweep)]
        raise ReportError(f"--sort {key}: no such column; choose one of: {', '.join(names)}")

    present = [job for job in table.jobs if usable(values[id(job)])]
    absent = [job for job in table.jobs if not usable(values[id(job)])]
    descending = descending != reverse
    present.sort(key=lambda job: (isinstance(values[id(job)], str), values[id(job)]), reverse=descending)
    return present + absent, not descending


def higher_first(sweep: Sweep, key: str) -> bool:
    """Whether the best value of metric `key` is the highest: the objective by its mode, accuracies and R^2."""
    if key in (sweep.objective.metric, sweep.objective.best_key):
        return sweep.objective.mode == "max"
    return bool(_HIGHER_IS_BETTER.match(key.split("/")[-1]))


def best_job(sweep: Sweep) -> Job | None:
    """The finished job with the best objective value (task.objective: its `_best`, else its last value);
    the first in launch order on a tie; None when no finished job has one."""
    objective, best, best_value = sweep.objective, None, None
    for job in sweep.jobs:
        try:
            value = objective.value(job.metrics) if job.status == "ok" else None
        except (TypeError, ValueError):  # a hand-edited metrics.json: not a number
            value = None
        if usable(value) and (best_value is None or objective.better(value, best_value)):
            best, best_value = job, value
    return best


def usable(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def maybe_float(value: str | None) -> float | str | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def write(table: Table) -> tuple[Path, Path]:
    """table.md and table.csv in the sweep folder, each written atomically (a grouped table:
    lab.results.grouped_table.write_grouped)."""
    from lab.utils.io import atomic_write_text

    md, csv = table.sweep.path / TABLE_MD, table.sweep.path / TABLE_CSV
    atomic_write_text(md, table.to_markdown())
    atomic_write_text(csv, table.to_csv())
    return md, csv

