"""Results table of a sweep: `python -m lab.report [<multirun dir>] [--metrics ...] [--sort KEY] [--plot]`.

One row per job, in the order Hydra's basic sweeper launches them, with status
`ok`, `failed: <the error's first line>` or `missing` (not started yet, or started
but without a result: still running or killed). The job list comes from
multirun.yaml, expanded with Hydra's own override parser, so a sweep that is still
running or stopped half-way shows every job it will have. Rows are never guessed:
metrics come only from each job's metrics.json. An Optuna study (hparams_search=optuna)
picks its trials as it runs: its rows are the job folders (one per trial, failed trials
included), with its objective val/top1_best as the first metric and its best trial from
optimization_results.yaml above the table.

Columns: the job number, the overridden parameters that *vary* across jobs, the
metrics, the status. Keys overridden to the same value for every job (fast-run
limits, an `experiment=` choice) are printed once above the table instead, so a
sweep of one knob has one parameter column however long its command line was;
table.csv (for machines, full precision) keeps every overridden key as a column, plus
the job folder, and splits status and error.

Written into the sweep folder, atomically: table.md and table.csv; with --plot one
PNG per metric against the swept parameter (plot_<metric>.png) and the same images
in a TensorBoard run `report/`. Importing this module is cheap (no torch, Hydra's
parser, matplotlib or TensorBoard until a function needs them).
"""

from __future__ import annotations

import argparse
import builtins
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import LabError

# Shown by default when at least one job has them, in this order.
STANDARD_METRICS = (
    "val/loss", "val/top1", "val/top5", "val/mse", "val/r2",
    "test/loss", "test/top1", "test/top5", "test/mse", "test/r2",
    "best_epoch", "wall_time_s",
)
# The columns of a sweep where no job has finished yet.
FALLBACK_METRICS = ("val/loss", "val/top1", "val/top5", "test/loss", "test/top1", "test/top5",
                    "best_epoch", "wall_time_s")
# What lab.run returns to a sweeper, so what an Optuna study optimizes; a column of its report.
OPTUNA_OBJECTIVE = "val/top1_best"
# Sorting by these puts the highest first (accuracies, R^2); every other metric lowest first.
_HIGHER_IS_BETTER = re.compile(r"^(top\d+(_best)?|acc\w*|r2(_best)?|f1\w*|auroc|precision|recall)$")
_INT_KEYS = {"best_epoch", "epochs", "seed"}
_DETAIL_WIDTH = 100  # error text in the printed and markdown tables (table.csv keeps all of it)
SWEEP_EXPECTED = "expected a sweep folder made by `python -m lab.run -m ...` (multirun.yaml and one folder per job)"


class ReportError(LabError):
    """The folder is not a sweep, or an option names a column that does not exist."""


@dataclass
class Job:
    """One job of the sweep: its overrides, its folder (None: not started) and its outcome."""

    num: int | None
    overrides: list[str]
    dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str = "missing"  # ok | failed | missing
    detail: str = "not started"

    @property
    def params(self) -> dict[str, str]:
        """key -> value as Hydra recorded it (`optimizer.lr=0.1` -> {"optimizer.lr": "0.1"})."""
        params = {}
        for item in self.overrides:
            key, _, value = item.partition("=")
            if key.startswith("~"):
                params[key[1:]] = "(deleted)"
            else:
                params[key.lstrip("+")] = value
        return params

    @property
    def status_text(self) -> str:
        return self.status if self.status == "ok" else f"{self.status}: {self.detail}"


@dataclass
class Sweep:
    """A sweep folder read back: its command line and its jobs in launch order."""

    path: Path
    jobs: list[Job]
    command: list[str]  # the task overrides of `python -m lab.run -m ...`
    note: str = ""  # set when the job list could only be read from the job folders
    optuna: dict[str, Any] | None = None  # an Optuna study: n_trials, direction, optimization_results.yaml

    @property
    def keys(self) -> list[str]:
        """Every overridden key, in command-line order."""
        keys: dict[str, None] = {}
        for job in self.jobs:
            keys.update(dict.fromkeys(job.params))
        return list(keys)

    @property
    def varying(self) -> list[str]:
        """The keys whose value is not the same for every job: the table's parameter columns."""
        return [k for k in self.keys if len({job.params.get(k) for job in self.jobs}) > 1]

    @property
    def fixed(self) -> dict[str, str]:
        varying = set(self.varying)
        return {k: self.jobs[0].params[k] for k in self.keys if k not in varying}

    def counts(self) -> dict[str, int]:
        counts = {"ok": 0, "failed": 0, "missing": 0}
        for job in self.jobs:
            counts[job.status] += 1
        return counts

    def summary(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in self.counts().items() if n)
        return f"{len(self.jobs)} job{'s' if len(self.jobs) != 1 else ''}: {counts or 'none'}"


# --- reading a sweep folder ------------------------------------------------------------
def latest_sweep(root: str | os.PathLike | None = None) -> Path:
    """The newest sweep under `root` (default: $LAB_OUTPUT_DIR/multiruns, else outputs/multiruns)."""
    root = Path(root) if root is not None else Path(os.environ.get("LAB_OUTPUT_DIR") or "outputs") / "multiruns"
    markers = [p for name in _SWEEP_MARKERS for p in root.glob(f"*/{name}")] if root.is_dir() else []
    if not markers:
        raise ReportError(f"{root}: no sweep found; run one with `python -m lab.run -m ...` or pass its folder")
    return max(markers, key=lambda p: p.stat().st_mtime).parent


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read a sweep folder: expected jobs from multirun.yaml, results from each job's folder."""
    path = Path(path)
    config = _read_multirun(path)
    hydra_cfg = config.get("hydra") or {}
    command = [str(o) for o in ((hydra_cfg.get("overrides") or {}).get("task") or [])]
    expected, note = _expected_jobs(hydra_cfg, command)
    found = [(folder, _read_overrides(folder)) for folder in _job_folders(path)]

    if expected is None:
        jobs = [_job(_folder_num(folder), overrides, folder) for folder, overrides in found]
        return Sweep(path, jobs, command, note, _read_optuna(path, hydra_cfg))

    slots: list[Job | None] = [None] * len(expected)
    free: dict[tuple[str, ...], list[int]] = {}
    for i, overrides in enumerate(expected):
        free.setdefault(tuple(overrides), []).append(i)
    unmatched = []
    for folder, overrides in found:
        indices = free.get(tuple(overrides or ()))
        if indices:
            i = indices.pop(0)
            slots[i] = _job(i, overrides, folder)
        else:
            unmatched.append((folder, overrides))
    extra = []
    for folder, overrides in unmatched:  # e.g. an unreadable overrides.yaml: pair by job number
        num = _folder_num(folder)
        if num is not None and num < len(slots) and slots[num] is None:
            slots[num] = _job(num, overrides, folder, expected[num])
        else:
            extra.append(_job(num, overrides or [], folder))
    jobs = [slot or Job(i, list(expected[i])) for i, slot in enumerate(slots)] + extra
    return Sweep(path, jobs, command, note)


# A sweep folder holds multirun.yaml (Hydra's basic sweeper, or lab.results.sweep_status for any other);
# an Optuna sweep made without lab's callback holds only optimization_results.yaml, once it ended.
_SWEEP_MARKERS = ("multirun.yaml", "optimization_results.yaml")
_OPTUNA_TARGET = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def _read_multirun(path: Path) -> dict:
    if not path.exists():
        raise ReportError(f"{path}: no such folder; {SWEEP_EXPECTED}")
    if not path.is_dir():
        raise ReportError(f"{path} is a file, not a folder; {SWEEP_EXPECTED}")
    multirun = path / "multirun.yaml"
    if not multirun.is_file() and (path / "optimization_results.yaml").is_file():
        return {"hydra": {"sweeper": {"_target_": _OPTUNA_TARGET}}}  # jobs and command from the folders
    if not multirun.is_file():
        if (path / "metrics.json").exists() or (path / ".hydra").is_dir():
            raise ReportError(f"{path} is one run's folder, not a sweep: no multirun.yaml; {SWEEP_EXPECTED}")
        inner = sorted(p.parent for p in path.glob("*/multirun.yaml"))
        if inner:
            raise ReportError(f"{path} holds {len(inner)} sweep(s), not one: pass one of them, e.g. {inner[-1]}")
        what = "is empty" if not any(path.iterdir()) else "has no multirun.yaml"
        raise ReportError(f"{path} {what}; {SWEEP_EXPECTED}")
    from omegaconf import OmegaConf

    try:
        config = OmegaConf.to_container(OmegaConf.load(multirun), resolve=False)
    except Exception as err:  # a truncated or hand-edited file: say which and why, in one line
        raise ReportError(f"{multirun}: unreadable ({_one_line(err)}); {SWEEP_EXPECTED}") from None
    if not isinstance(config, dict) or not isinstance(config.get("hydra"), dict):
        raise ReportError(f"{multirun}: no `hydra:` section; {SWEEP_EXPECTED}")
    return config


def expand_overrides(arguments: list[str], config_dir: str | None = None) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches for these overrides, in its order.

    The same steps as BasicSweeper.split_arguments (hydra/_internal/core_plugins):
    each key keeps the position of its first mention and the value of its last, and
    the jobs are the cartesian product of the keys' values. `glob(...)` over a config
    group needs the config folder to list the group's options.
    """
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = None
    if config_dir is not None:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra._internal.utils import create_config_search_path

        loader = ConfigLoaderImpl(config_search_path=create_config_search_path(config_dir))
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    values: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ValueError(f"{key}: the basic sweeper cannot expand a {override.value_type.name} sweep")
            values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*values.values())]


def _expected_jobs(hydra_cfg: dict, command: list[str]) -> tuple[list[list[str]] | None, str]:
    """(the job list, "") or (None, why the jobs can only be read from their folders)."""
    sweeper = hydra_cfg.get("sweeper") or {}
    target = str(sweeper.get("_target_") or "")
    if target and not target.endswith("BasicSweeper"):
        return None, f"jobs read from their folders: {target.rsplit('.', 1)[-1]} picks its jobs as it runs"
    arguments = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()] + command
    try:
        return expand_overrides(arguments), ""
    except Exception as err:
        if "ConfigLoader" in str(err):  # glob(...) over a config group
            try:
                return expand_overrides(arguments, _config_dir(hydra_cfg)), ""
            except Exception as second:
                err = second
        return None, f"jobs read from their folders: cannot expand the sweep's overrides ({_one_line(err)})"


def _read_optuna(path: Path, hydra_cfg: dict) -> dict[str, Any] | None:
    """An Optuna sweep's study: direction, n_trials, and the best trial once the study ended
    (optimization_results.yaml: best_params and best_value, or the Pareto `solutions`)."""
    sweeper = hydra_cfg.get("sweeper") or {}
    if "optuna" not in str(sweeper.get("_target_") or "").lower():
        return None
    study: dict[str, Any] = {"n_trials": sweeper.get("n_trials"), "direction": sweeper.get("direction")}
    results = path / "optimization_results.yaml"
    if results.is_file():
        import yaml

        try:
            loaded = yaml.safe_load(results.read_text())
            study["results"] = loaded if isinstance(loaded, dict) else {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            study["error"] = f"unreadable optimization_results.yaml ({_one_line(err)})"
    return study


def _config_dir(hydra_cfg: dict) -> str:
    """The config folder the sweep was composed from (else lab's own)."""
    for source in (hydra_cfg.get("runtime") or {}).get("config_sources") or []:
        if source.get("provider") == "main" and source.get("schema") == "file" and Path(source["path"]).is_dir():
            return source["path"]
    from lab.config.paths import config_dir

    return config_dir()


def _job_folders(path: Path) -> list[Path]:
    """Every folder under the sweep holding Hydra's `.hydra/` (not descending into jobs)."""
    folders = []
    for root, dirs, _ in os.walk(path):
        if ".hydra" in dirs and Path(root) != path:
            folders.append(Path(root))
            dirs[:] = []
        else:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(folders, key=lambda p: (_folder_num(p) is None, _folder_num(p) or 0, str(p)))


def _folder_num(folder: Path) -> int | None:
    return int(folder.name) if folder.name.isdigit() else None


def _read_overrides(folder: Path) -> list[str] | None:
    import yaml

    try:
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(overrides, list):
        return [] if overrides is None else None
    return [str(o) for o in overrides]


def _job(num: int | None, overrides: list[str] | None, folder: Path, expected: list[str] | None = None) -> Job:
    """A started job: failed (error.json, or an unreadable metrics.json), ok, or without a result yet.

    overrides is None when .hydra/overrides.yaml is unreadable; `expected` (the sweep's
    overrides for this job number) then stands in, and the status says so.
    """
    import json

    job = Job(num, list(overrides if overrides is not None else expected or []), folder,
              status="missing", detail="no result yet (running or killed)")
    metrics_path, error_path = folder / "metrics.json", folder / "error.json"
    if metrics_path.exists():
        try:
            metrics = json.loads(metrics_path.read_text())
            if not isinstance(metrics, dict):
                raise ValueError(f"a JSON {type(metrics).__name__}, not an object")
            job.metrics = {k: _number(v) for k, v in metrics.items()}
            job.status, job.detail = "ok", ""
        except (OSError, UnicodeDecodeError, ValueError) as err:
            job.status, job.detail = "failed", f"unreadable metrics.json ({_one_line(err)})"
    if error_path.exists():
        job.status = "failed"
        try:
            error = json.loads(error_path.read_text())
            message = _one_line(error.get("error") or "") or "(no message)"
            kind = str(error.get("type") or "")
            # lab's own errors explain themselves; a crash's bare message (KeyError: 'x') needs its type
            if kind and kind != "ValueError" and hasattr(builtins, kind):
                message = f"{kind}: {message}"
            job.detail = message
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as err:
            job.detail = f"unreadable error.json ({_one_line(err)})"
    if overrides is None:
        job.detail = (job.detail + "; " if job.detail else "") + "unreadable .hydra/overrides.yaml"
    return job


def _number(value: Any) -> Any:
    """metrics.json stores non-finite floats as strings ("nan", "inf"); read them back as floats."""
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity"):
        return float(value)
    return value


def _one_line(value: Any) -> str:
    lines = [line.strip() for line in str(value).splitlines() if line.strip()]
    return lines[0] if lines else ""


# --- the table ---------------------------------------------------------------------------
@dataclass
class Table:
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
        return ", ".join(f"{k}={_short(job.params.get(k, ''))}" for k in self.params) or f"job {job.num}"

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
        if len(status) > _DETAIL_WIDTH:
            status = status[: _DETAIL_WIDTH - 1] + "…"
        return ["" if job.num is None else str(job.num), *(_short(job.params.get(k, "")) for k in self.params),
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

    def to_csv(self) -> str:
        import csv
        import io

        records = self.records()
        out = io.StringIO()
        fields = list(records[0]) if records else ["job", *self.metrics, "status", "error", "dir"]
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
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
                table = self._rich_table(min(40, max([len("status"), *(len(self.cells(j)[-1]) for j in self.jobs)])))
        return Group(*(Text(line) for line in self.heading()), table)

    def _rich_table(self, status_width: int | None):
        from rich.table import Table as RichTable

        table = RichTable(header_style="bold")
        for column in self.columns:
            numeric = column == "job" or column in self.metrics
            table.add_column(column, justify="right" if numeric else "left", no_wrap=column != "status",
                             overflow="fold", width=status_width if column == "status" else None)
        styles = {"ok": "green", "failed": "red", "missing": "yellow"}
        for job in self.jobs:
            cells = self.cells(job)
            cells[-1] = f"[{styles[job.status]}]{_escape(cells[-1])}[/]"
            table.add_row(*cells[:-1], cells[-1])
        return table


def _optuna_line(sweep: Sweep) -> str:
    """`Optuna study (maximize, 20 trials): best job 7, value 0.9852 (optimization_results.yaml)`."""
    study = sweep.optuna or {}
    direction = study.get("direction")
    direction = "/".join(map(str, direction)) if isinstance(direction, list) else direction
    about = ", ".join(x for x in (str(direction or ""), f"{study['n_trials']} trials" if study.get("n_trials")
                                  else "") if x)
    line = "Optuna study" + (f" ({about})" if about else "") + ": "
    results = study.get("results")
    if study.get("error"):
        return line + study["error"]
    if results is None:
        return line + "running or stopped (optimization_results.yaml is written when the study ends)"
    if "best_value" not in results:
        return line + f"{len(results.get('solutions') or [])} Pareto-optimal trials (optimization_results.yaml)"
    best = {str(k): v for k, v in (results.get("best_params") or {}).items()}
    jobs = [job.num for job in sweep.jobs if job.status == "ok" and _same_params(job.params, best)]
    which = f"job {jobs[0]}" if jobs else ", ".join(f"{k}={v}" for k, v in best.items())
    return line + f"best {which}, value {format_value('', results['best_value'])} (optimization_results.yaml)"


def _same_params(params: dict[str, str], best: dict[str, Any]) -> bool:
    """Whether a job's overrides hold the trial's parameters (written by Optuna as Python values)."""
    for key, value in best.items():
        if key not in params:
            return False
        mine, theirs = _maybe_float(params[key]), value
        if isinstance(mine, float) and isinstance(theirs, (int, float)) and not isinstance(theirs, bool):
            if not math.isclose(mine, float(theirs), rel_tol=1e-12):
                return False
        elif str(params[key]) != str(value):
            return False
    return True


def _short(value: str) -> str:
    """A long float parameter (Optuna's 0.0013292918943162175) to 4 significant digits for the
    printed and markdown tables; values as typed on a command line stay as they are."""
    if len(value) <= 8:
        return value
    number = _maybe_float(value)
    return f"{number:.4g}" if isinstance(number, float) and math.isfinite(number) else value


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


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
    return [k for k in STANDARD_METRICS if k in keys] + sorted(keys - set(STANDARD_METRICS))


def select_metrics(sweep: Sweep, requested: list[str] | None = None) -> list[str]:
    """The metric columns: the standard ones present, or `requested` (names or globs like val/*)."""
    import fnmatch

    available = available_metrics(sweep)
    if not requested:
        chosen = [k for k in STANDARD_METRICS if k in available]
        if sweep.optuna is not None and OPTUNA_OBJECTIVE in available:
            chosen.insert(0, OPTUNA_OBJECTIVE)  # what the study maximizes
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

    "Best first" means highest first for accuracies and R^2, lowest first for anything
    else (losses, errors, times); `reverse` flips it. Rows without a value (failed,
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
        values = {id(job): _maybe_float(job.params.get(key)) for job in table.jobs}
        descending = False
    elif key in available_metrics(sweep) or key in table.metrics:
        values = {id(job): job.metrics.get(key) for job in table.jobs}
        descending = bool(_HIGHER_IS_BETTER.match(key.split("/")[-1]))
    else:
        names = ["job", *sweep.keys, *available_metrics(sweep)]
        raise ReportError(f"--sort {key}: no such column; choose one of: {', '.join(names)}")

    def usable(value: Any) -> bool:
        return value is not None and not (isinstance(value, float) and math.isnan(value))

    present = [job for job in table.jobs if usable(values[id(job)])]
    absent = [job for job in table.jobs if not usable(values[id(job)])]
    descending = descending != reverse
    present.sort(key=lambda job: (isinstance(values[id(job)], str), values[id(job)]), reverse=descending)
    return present + absent, not descending


def _maybe_float(value: str | None) -> float | str | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


# --- plots ---------------------------------------------------------------------------------
def plot(table: Table, x: str | None = None, folder: str | os.PathLike | None = None,
         tensorboard: bool = True) -> list[Path]:
    """One PNG per metric against a swept parameter; also logged to TensorBoard in `report/`.

    x defaults to the first parameter that varies; the other varying parameters make one
    line each. Jobs without a value (failed, missing, nan) are left out, so the plot of a
    running sweep fills in as jobs finish. Returns the PNG paths (none when no parameter
    varies or no job has a value).
    """
    from lab.utils.io import atomic_write_bytes

    folder = Path(folder) if folder is not None else table.sweep.path
    if x is None:
        if not table.params:
            return []
        x = table.params[0]
    elif x not in table.sweep.keys:
        raise ReportError(f"--x {x}: not an overridden key of this sweep; choose one of: {', '.join(table.sweep.keys)}")
    images: dict[str, bytes] = {}
    paths = []
    for metric in table.metrics:
        png = _plot_png(table, metric, x)
        if png is None:
            continue
        path = folder / f"plot_{re.sub(r'[^A-Za-z0-9_.-]+', '_', metric)}.png"
        atomic_write_bytes(path, png)
        paths.append(path)
        images[f"report/{metric}"] = png
    if tensorboard and images:
        _log_images(folder / "report", images)
    return paths


def figure(table: Table, metric: str, x: str):
    """The matplotlib Figure of one metric against parameter x (no pyplot: no backend change)."""
    from matplotlib.figure import Figure

    others = [k for k in table.params if k != x]
    points = []
    for job in table.jobs:
        value = job.metrics.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            points.append((job, job.params.get(x, ""), float(value)))
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    all_x = [job.params.get(x, "") for job in table.sweep.jobs]  # launch order, whatever the table's sort
    numeric = all(isinstance(_maybe_float(v), float) for v in all_x)
    categories = list(dict.fromkeys(all_x))
    series: dict[str, list[tuple[Any, float]]] = {}
    for job, xv, yv in points:
        label = ", ".join(_short(job.params.get(k, "")) for k in others)  # the legend's title names the keys
        series.setdefault(label, []).append((float(xv) if numeric else categories.index(xv), yv))
    for label, values in series.items():
        values.sort()
        ax.plot([v[0] for v in values], [v[1] for v in values], marker="o", label=label or None)
    if numeric:
        xs = [float(v) for v in all_x]
        log = min(xs) > 0 and max(xs) / min(xs) >= 10
        if log:
            ax.set_xscale("log")
        ticks = {float(v): _short(v) for v in all_x}  # every swept value, written as on the command line
        if len(ticks) <= 12:
            ax.set_xticks(list(ticks), list(ticks.values()))
            ax.minorticks_off()
            lo, hi = (math.log10(min(xs)), math.log10(max(xs))) if log else (min(xs), max(xs))
            pad = 0.06 * (hi - lo) or 0.5
            ax.set_xlim(*((10 ** (lo - pad), 10 ** (hi + pad)) if log else (lo - pad, hi + pad)))
    else:
        long = sum(len(c) for c in categories) > 40
        ax.set_xticks(range(len(categories)), categories, rotation=25 if long else 0, ha="right" if long else "center")
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {x}  ({len(points)} of {len(table.jobs)} jobs)", fontsize=10)
    ax.grid(True, alpha=0.3)
    if others and series:
        ax.legend(title=", ".join(others), fontsize=8, title_fontsize=8)
    return fig


def _plot_png(table: Table, metric: str, x: str) -> bytes | None:
    import io

    if not any(isinstance(job.metrics.get(metric), (int, float)) for job in table.jobs):
        return None
    buffer = io.BytesIO()
    figure(table, metric, x).savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _log_images(folder: Path, images: dict[str, bytes]) -> None:
    """PNG images as one TensorBoard event (step 0); the report run is regenerated, not appended."""
    import time

    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()
    values = []
    for tag, png in images.items():
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # PNG IHDR
        image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
        values.append(Summary.Value(tag=tag, image=image))
    writer = EventFileWriter(str(folder))
    writer.add_event(Event(wall_time=time.time(), step=0, summary=Summary(value=values)))
    writer.close()


# --- command line ------------------------------------------------------------------------------
def write(table: Table) -> tuple[Path, Path]:
    """table.md and table.csv in the sweep folder, each written atomically."""
    from lab.utils.io import atomic_write_text

    md, csv = table.sweep.path / "table.md", table.sweep.path / "table.csv"
    atomic_write_text(md, table.to_markdown())
    atomic_write_text(csv, table.to_csv())
    return md, csv


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab.report",
        description="Results table of a sweep (python -m lab.run -m ...): one row per job, its varying "
                    "parameters, metrics and status (ok / failed: error / missing). Prints it and writes "
                    "table.md and table.csv into the sweep folder.",
    )
    parser.add_argument("sweep", nargs="?", help="the sweep folder (default: the newest in "
                        "$LAB_OUTPUT_DIR/multiruns, else outputs/multiruns)")
    parser.add_argument("--metrics", action="append", metavar="M[,M...]",
                        help="metric columns, comma-separated names or globs (e.g. 'test/*'); "
                             "default: val/test loss, top-1, top-5 (or mse, r2), best_epoch, wall_time_s")
    parser.add_argument("--sort", metavar="KEY", help="sort rows by a metric (best first: highest for "
                        "accuracies and r2, lowest otherwise) or a parameter (ascending)")
    parser.add_argument("--reverse", action="store_true", help="reverse the --sort order")
    parser.add_argument("--plot", action="store_true", help="one PNG per metric against the swept parameter "
                        "(plot_<metric>.png), also as images in the TensorBoard run report/")
    parser.add_argument("--x", metavar="KEY", help="the parameter on the plots' x axis (default: the first "
                        "that varies; the others make one line each)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI: print the table, write table.md/table.csv (and plots); bad input: one line, status 2."""
    args = _parser().parse_args(argv)
    from lab.utils.console import console, print_error

    try:
        path = Path(args.sweep) if args.sweep else latest_sweep()
        table = build_table(load_sweep(path), args.metrics, args.sort, args.reverse)
        if not console.is_terminal:
            # a log file gets the whole table, not a wrapped one
            wide = console.options.update_width(100_000)
            console.width = max(console.width, 160, console.measure(table.to_rich(), options=wide).maximum)
        console.print(table.to_rich(console))
        try:
            written = list(write(table))
            if args.plot:
                pngs = plot(table, args.x)
                written += pngs
                if pngs:
                    written.append(path / "report")
                else:
                    console.print("nothing to plot: " + ("no parameter varies across jobs" if not table.params
                                                         else "no job has a value yet"))
        except OSError as err:
            raise ReportError(f"cannot write the report into {path}: {err.strerror or err}") from None
    except ReportError as err:
        print_error(str(err))
        return 2
    console.print("[bold]written:[/bold] " + ", ".join(str(p) for p in written), soft_wrap=True, highlight=False)
    return 0


if __name__ == "__main__":
    from lab.utils.shutdown import skip_final_collection

    skip_final_collection()
    sys.exit(main())
