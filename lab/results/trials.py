"""An Optuna study's database in its sweep folder: where it is, how to open it, its trials read back.

lab's Optuna sweeper (hydra_plugins.lab_optuna_sweeper) keeps the study in `<sweep>/optuna.db`
(SQLite: one file, no server), so a killed search resumes from it and optuna-dashboard opens it.
The pruning callback (lab.callbacks.pruning) reaches its trial through the same file, and
lab.report lists every trial from it: state (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), value
and parameters. The names of the trial attributes lab writes live here, for all three.
Optuna is imported only when a study is opened: lab.report stays cheap for other sweeps.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DB = "optuna.db"
SWEEPER_TARGET = "hydra_plugins.lab_optuna_sweeper.sweeper.LabOptunaSweeper"
TRIALS_MD, TRIALS_CSV = "trials.md", "trials.csv"
# Trial user attributes (optuna-dashboard shows them too).
PRUNED_AT = "pruned_at_epoch"  # set by the pruning callback; the sweeper then tells Optuna PRUNED
LAUNCHED_BY = "launched_by"  # "<host> <pid>" of the sweeper running the trial: is it still alive?
JOB_DIR = "job_dir"  # the trial's job folder
ERROR_ATTR = "error"  # a FAIL trial's error (its job's error.json, first line)
# Study user attributes: the search a study was made by, compared when it is resumed.
SEARCH_ATTR, FIXED_ATTR = "lab_search_space", "lab_fixed_overrides"
_STYLES = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", "RUNNING": "cyan", "WAITING": "cyan"}


def storage_url(sweep_dir: str | os.PathLike) -> str:
    """`sqlite:///<absolute sweep dir>/optuna.db`: the default storage of a study."""
    return f"sqlite:///{Path(sweep_dir).resolve() / DB}"


def open_storage(url: str, read_only: bool = False):
    """Optuna's RDBStorage for `url`. SQLite waits up to a minute for a lock (parallel jobs report
    to the same file); `read_only` creates no tables (a report never writes)."""
    from optuna.storages import RDBStorage

    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=read_only)


def build_pruner(cfg: dict | None) -> Any:
    """The pruner of a `hydra.sweeper.pruner` node (None: no pruning): the sweeper and each trial's
    pruning callback build the same one."""
    if not cfg:
        import optuna

        return optuna.pruners.NopPruner()
    return build(dict(cfg), "hydra.sweeper.pruner")


def build(cfg: dict, key: str) -> Any:
    """Instantiate an Optuna sampler or pruner node; a bad argument is a ConfigError naming `key`."""
    from hydra.utils import instantiate

    from lab.errors import ConfigError

    try:
        return instantiate(cfg, _convert_="all")
    except Exception as err:  # noqa: BLE001 - say which node and Optuna's reason, in one line
        cause = err.__cause__ or err
        message = " ".join(str(cause).split())
        raise ConfigError(f"{key} ({cfg.get('_target_')}): {message}") from None


def quiet_optuna() -> None:
    """Optuna's own INFO lines (a study created, a trial finished) would repeat what lab prints."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class TrialRow:
    """One trial as the database holds it."""

    number: int
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    value: float | None
    params: dict[str, Any]
    steps: int = 0  # intermediate values reported (validation epochs)
    pruned_at: int | None = None
    job_dir: str | None = None
    error: str | None = None


@dataclass
class Study:
    """A study read back from its storage."""

    name: str
    url: str
    direction: str
    trials: list[TrialRow] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.state] = counts.get(trial.state, 0) + 1
        return counts

    def summary(self) -> str:
        counts = ", ".join(f"{n} {state}" for state, n in self.counts().items())
        return f"{len(self.trials)} trial{'s' if len(self.trials) != 1 else ''}" + (f": {counts}" if counts else "")


def read_study(sweep_dir: str | os.PathLike, study_name: str | None = None) -> Study | None:
    """The study in `<sweep_dir>/optuna.db` (None when there is no such file); `study_name` picks one
    when the file holds several. Raises lab.results.sweep.ReportError (one line) when it cannot be read."""
    from lab.results.sweep import ReportError, one_line

    db = Path(sweep_dir) / DB
    if not db.is_file():
        return None
    import optuna

    quiet_optuna()
    url = storage_url(sweep_dir)
    try:
        storage = open_storage(url, read_only=True)
        names = optuna.get_all_study_names(storage)
        if study_name not in names:
            if len(names) != 1:
                raise ReportError(f"{db} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                                  f"none is named {study_name!r}")
            study_name = names[0]
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler())
        frozen = study.get_trials(deepcopy=False)
        direction = study.direction.name.lower()
    except ReportError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged or foreign file: say which and why, in one line
        raise ReportError(f"{db}: unreadable Optuna storage ({type(err).__name__}: {one_line(err)})") from None
    rows = [TrialRow(t.number, t.state.name, t.value, dict(t.params), len(t.intermediate_values),
                     t.user_attrs.get(PRUNED_AT), t.user_attrs.get(JOB_DIR), t.user_attrs.get(ERROR_ATTR))
            for t in frozen]
    return Study(study_name, url, direction, rows)


@dataclass
class TrialsTable:
    """Every trial of a study: its number, state, value and parameters (lab.report prints it below
    the job table and writes trials.md and trials.csv)."""

    study: Study
    sweep_dir: Path
    objective: str = ""  # what the value is: the key lab.run returns (task.objective's <metric>_best)

    @property
    def params(self) -> list[str]:
        keys: dict[str, None] = {}
        for trial in self.study.trials:
            keys.update(dict.fromkeys(trial.params))
        return list(keys)

    @property
    def columns(self) -> list[str]:
        return ["trial", "state", "value", *self.params, "epochs reported", "note"]

    def heading(self) -> list[str]:
        what = f"{self.study.direction} {self.objective}".strip()
        return [f"Optuna study `{self.study.name}` ({what}) in {DB}: {self.study.summary()}",
                f"Dashboard: `optuna-dashboard {self.study.url}`"]

    def note(self, trial: TrialRow) -> str:
        if trial.state == "PRUNED" and trial.pruned_at is not None:
            return f"pruned at epoch {trial.pruned_at} (value: that epoch's)"
        return trial.error or ""

    def cells(self, trial: TrialRow) -> list[str]:
        from lab.results.table import format_value, short

        return [str(trial.number), trial.state, format_value("", trial.value),
                *(short(str(trial.params[k])) if k in trial.params else "" for k in self.params),
                str(trial.steps), self.note(trial)]

    def records(self) -> list[dict[str, Any]]:
        rows = []
        for trial in self.study.trials:
            row: dict[str, Any] = {"trial": trial.number, "state": trial.state, "value": trial.value}
            row.update({k: trial.params.get(k) for k in self.params})
            row.update({"epochs_reported": trial.steps, "pruned_at_epoch": trial.pruned_at,
                        "error": trial.error or "", "dir": self._relative(trial.job_dir)})
            rows.append(row)
        return rows

    def _relative(self, job_dir: str | None) -> str:
        """The job folder under the sweep folder, as table.csv gives it."""
        if not job_dir:
            return ""
        try:
            return str(Path(job_dir).resolve().relative_to(self.sweep_dir.resolve()))
        except ValueError:
            return job_dir

    def to_rich(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        from lab.results.table import escape

        table = Table(header_style="bold")
        for column in self.columns:
            table.add_column(column, justify="right" if column in ("trial", "value", "epochs reported") else "left",
                             overflow="fold")
        for trial in self.study.trials:
            cells = self.cells(trial)
            style = _STYLES.get(trial.state, "white")
            table.add_row(cells[0], f"[{style}]{trial.state}[/]", *(escape(c) for c in cells[2:]))
        return Group(*(Text(line) for line in self.heading()), table)

    def to_markdown(self) -> str:
        def row(cells: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

        align = ["---:", "---", "---:", *(["---"] * len(self.params)), "---:", "---"]
        lines = [line + "  " for line in self.heading()[:-1]] + self.heading()[-1:]
        lines += ["", row(self.columns), "|" + "|".join(align) + "|"]
        lines += [row(self.cells(trial)) for trial in self.study.trials]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        import csv
        import io

        records = self.records()
        fields = list(records[0]) if records else ["trial", "state", "value", "epochs_reported", "pruned_at_epoch",
                                                   "error", "dir"]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                             for k, v in record.items()})
        return out.getvalue()

    def write(self) -> tuple[Path, Path]:
        """trials.md and trials.csv in the sweep folder, each written atomically."""
        from lab.utils.io import atomic_write_text

        md, csv = self.sweep_dir / TRIALS_MD, self.sweep_dir / TRIALS_CSV
        atomic_write_text(md, self.to_markdown())
        atomic_write_text(csv, self.to_csv())
        return md, csv
