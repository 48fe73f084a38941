"""Reading a sweep folder back: its command line, its objective and its jobs in launch order.

The job list comes from multirun.yaml, expanded with Hydra's own override parser, so a
sweep that is still running or stopped half-way has every job it will have; a job is
`ok` (metrics.json), `failed` (error.json, or an unreadable metrics.json) or `missing`
(not started, or started without a result: running or killed). An Optuna study picks its
trials as it runs, so its jobs are its folders; lab's Optuna sweeper also leaves the study in
optuna.db (lab.results.trials), whose trial states (PRUNED, FAIL, RUNNING) join the jobs.
Rows are never guessed: metrics come only from each job's metrics.json. Cheap to import:
Hydra's parser, yaml and optuna load when needed.
"""

from __future__ import annotations

import builtins
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.config.objective import Objective, objective_of
from lab.errors import ConfigError, LabError
from lab.results.trials import SWEEPER_TARGET
from lab.runs import folder as run_folder

SWEEP_EXPECTED = "expected a sweep folder made by `python -m lab.run -m ...` (multirun.yaml and one folder per job)"
# A sweep folder holds multirun.yaml (Hydra's basic sweeper, or lab.results.sweep_status for any other);
# an Optuna sweep made without lab's callback holds only optimization_results.yaml, once it ended.
_SWEEP_MARKERS = (run_folder.MULTIRUN, run_folder.OPTUNA_RESULTS)


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
    state: str | None = None  # an Optuna trial's state in optuna.db: COMPLETE | PRUNED | FAIL | RUNNING
    pruned_at: int | None = None  # the epoch a PRUNED trial stopped at

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
        if self.status != "ok":
            return f"{self.status}: {self.detail}"
        if self.state == "PRUNED":  # finished early, with metrics.json: its values are of fewer epochs
            return "ok, pruned" + (f" at epoch {self.pruned_at}" if self.pruned_at is not None else "")
        return "ok" if self.state in (None, "COMPLETE") else f"ok, Optuna {self.state}"


@dataclass
class Sweep:
    """A sweep folder read back: its command line and its jobs in launch order."""

    path: Path
    jobs: list[Job]
    command: list[str]  # the task overrides of `python -m lab.run -m ...`
    note: str = ""  # set when the job list could only be read from the job folders
    optuna: dict[str, Any] | None = None  # an Optuna study: n_trials, direction, optimization_results.yaml
    objective: Objective = field(default_factory=Objective)  # task.objective: what ranks the jobs
    study: dict[str, Any] | None = None  # a study's `study:` node (conf/study/), else None

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
    folders = job_folders(path)
    found = [(folder, _read_overrides(folder)) for folder in folders]
    objective = _objective(path, config, folders)

    if expected is None:
        jobs = [_job(_folder_num(folder), overrides, folder) for folder, overrides in found]
        optuna = _read_optuna(path, hydra_cfg)
        if optuna is not None:
            note = _join_trials(path, jobs, optuna, note)
        return Sweep(path, jobs, command, note, optuna, objective, _study(config))

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
    return Sweep(path, jobs, command, note, objective=objective, study=_study(config))


def _study(config: dict) -> dict[str, Any] | None:
    node = config.get("study")
    return node if isinstance(node, dict) else None


def _read_multirun(path: Path) -> dict:
    if not path.exists():
        raise ReportError(f"{path}: no such folder; {SWEEP_EXPECTED}")
    if not path.is_dir():
        raise ReportError(f"{path} is a file, not a folder; {SWEEP_EXPECTED}")
    multirun = path / run_folder.MULTIRUN
    if not multirun.is_file() and (path / run_folder.OPTUNA_RESULTS).is_file():
        return {"hydra": {"sweeper": {"_target_": SWEEPER_TARGET}}}  # jobs and command from the folders
    if not multirun.is_file():
        if (path / run_folder.METRICS).exists() or run_folder.is_run(path):
            raise ReportError(f"{path} is one run's folder, not a sweep: no {run_folder.MULTIRUN}; {SWEEP_EXPECTED}")
        inner = sorted(p.parent for p in path.glob(f"*/{run_folder.MULTIRUN}"))
        if inner:
            raise ReportError(f"{path} holds {len(inner)} sweep(s), not one: pass one of them, e.g. {inner[-1]}")
        what = "is empty" if not any(path.iterdir()) else f"has no {run_folder.MULTIRUN}"
        raise ReportError(f"{path} {what}; {SWEEP_EXPECTED}")
    from omegaconf import OmegaConf

    try:
        config = OmegaConf.to_container(OmegaConf.load(multirun), resolve=False)
    except Exception as err:  # a truncated or hand-edited file: say which and why, in one line
        raise ReportError(f"{multirun}: unreadable ({one_line(err)}); {SWEEP_EXPECTED}") from None
    if not isinstance(config, dict) or not isinstance(config.get("hydra"), dict):
        raise ReportError(f"{multirun}: no `hydra:` section; {SWEEP_EXPECTED}")
    return config


def _objective(path: Path, config: dict, folders: list[Path]) -> Objective:
    """task.objective of the sweep's config (multirun.yaml), else of its first job's .hydra/config.yaml
    (an Optuna study made without lab's callback has no multirun.yaml), else the default."""
    source, saved = path / run_folder.MULTIRUN, config
    if "task" not in config:
        import yaml

        for job in folders:
            try:
                loaded = yaml.safe_load(run_folder.hydra_file(job).read_text())
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue
            if isinstance(loaded, dict):
                source, saved = run_folder.hydra_file(job), loaded
                break
    if not isinstance(saved.get("task"), dict):
        return Objective()
    try:
        return objective_of(saved)
    except ConfigError as err:
        raise ReportError(f"{source}: {one_line(err)}") from None


def expand_overrides(arguments: list[str], config_dir: str | None = None) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches for these overrides, in its order.

    The same steps as Hydra's BasicSweeper.split_arguments:
    each key keeps the position of its first mention and the value of its last, and
    the jobs are the cartesian product of the keys' values. `glob(...)` over a config
    group needs the config folder to list the group's options.
    """
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    if config_dir is None:
        overrides = OverridesParser.create().parse_overrides(arguments)
    else:  # Hydra's own config loader for the folder (public API), to list a group's options
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        if GlobalHydra.instance().is_initialized():
            GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
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
        return None, f"jobs read from their folders: cannot expand the sweep's overrides ({one_line(err)})"


def _read_optuna(path: Path, hydra_cfg: dict) -> dict[str, Any] | None:
    """An Optuna sweep's study: direction, n_trials, and the best trial once the study ended
    (optimization_results.yaml: best_params and best_value, or the Pareto `solutions`)."""
    sweeper = hydra_cfg.get("sweeper") or {}
    if "optuna" not in str(sweeper.get("_target_") or "").lower():
        return None
    study: dict[str, Any] = {"n_trials": sweeper.get("n_trials"), "direction": sweeper.get("direction"),
                             "study_name": sweeper.get("study_name")}
    results = path / run_folder.OPTUNA_RESULTS
    if results.is_file():
        import yaml

        try:
            loaded = yaml.safe_load(results.read_text())
            study["results"] = loaded if isinstance(loaded, dict) else {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            study["error"] = f"unreadable {run_folder.OPTUNA_RESULTS} ({one_line(err)})"
    return study


def _join_trials(path: Path, jobs: list[Job], optuna: dict[str, Any], note: str) -> str:
    """The study in optuna.db (lab.results.trials), kept in `optuna["db"]`; each job folder N gets
    trial N's state. Returns the note, with why the database could not be read if so."""
    from lab.results.trials import read_study

    name = optuna.get("study_name")
    try:
        study = read_study(path, str(name) if name and "${" not in str(name) else None)
    except ReportError as err:
        return "; ".join(x for x in (note, str(err)) if x)
    if study is None:
        return note
    optuna["db"] = study
    trials = {trial.number: trial for trial in study.trials}
    for job in jobs:
        trial = trials.get(job.num) if job.num is not None else None
        if trial is not None:
            job.state, job.pruned_at = trial.state, trial.pruned_at
    return note


def _config_dir(hydra_cfg: dict) -> str:
    """The config folder the sweep was composed from (else lab's own)."""
    for source in (hydra_cfg.get("runtime") or {}).get("config_sources") or []:
        if source.get("provider") == "main" and source.get("schema") == "file" and Path(source["path"]).is_dir():
            return source["path"]
    from lab.config.paths import config_dir

    return config_dir()


def job_folders(path: Path) -> list[Path]:
    """Every folder under the sweep holding Hydra's `.hydra/` (not descending into jobs), job numbers first."""
    folders = []
    for root, dirs, _ in os.walk(path):
        if run_folder.HYDRA in dirs and Path(root) != path:
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
        overrides = yaml.safe_load(run_folder.hydra_file(folder, run_folder.OVERRIDES).read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(overrides, list):
        return [] if overrides is None else None
    return [str(o) for o in overrides]


def _job(num: int | None, overrides: list[str] | None, folder: Path, expected: list[str] | None = None) -> Job:
    """A started job: failed (error.json, or an unreadable metrics.json), ok, or without a result yet.

    overrides is None when .hydra/overrides.yaml is unreadable; `expected` (the sweep's
    overrides for this job number) then stands in, and the status says so. metrics.json is
    read here, not with lab.runs.folder.read_metrics: counts stay integers, and a damaged
    file is this job's status, not an exception.
    """
    import json

    job = Job(num, list(overrides if overrides is not None else expected or []), folder,
              status="missing", detail="no result yet (running or killed)")
    metrics_path, error_path = folder / run_folder.METRICS, folder / run_folder.ERROR
    if metrics_path.exists():
        try:
            metrics = json.loads(metrics_path.read_text())
            if not isinstance(metrics, dict):
                raise ValueError(f"a JSON {type(metrics).__name__}, not an object")
            job.metrics = {k: _number(v) for k, v in metrics.items()}
            job.status, job.detail = "ok", ""
        except (OSError, UnicodeDecodeError, ValueError) as err:
            job.status, job.detail = "failed", f"unreadable {run_folder.METRICS} ({one_line(err)})"
    if error_path.exists():
        job.status = "failed"
        try:
            error = json.loads(error_path.read_text())
            message = one_line(error.get("error") or "") or "(no message)"
            kind = str(error.get("type") or "")
            # lab's own errors explain themselves; a crash's bare message (KeyError: 'x') needs its type
            if kind and kind != "ValueError" and hasattr(builtins, kind):
                message = f"{kind}: {message}"
            job.detail = message
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as err:
            job.detail = f"unreadable {run_folder.ERROR} ({one_line(err)})"
    if overrides is None:
        job.detail = (job.detail + "; " if job.detail else "") + f"unreadable {run_folder.HYDRA}/{run_folder.OVERRIDES}"
    return job


def _number(value: Any) -> Any:
    """metrics.json stores non-finite floats as strings ("nan", "inf"); read them back as floats."""
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity"):
        return float(value)
    return value


def one_line(value: Any) -> str:
    """The first non-blank line of a message (error texts in tables and one-line errors)."""
    lines = [line.strip() for line in str(value).splitlines() if line.strip()]
    return lines[0] if lines else ""
