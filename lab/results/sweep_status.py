"""Hydra callback for `python -m lab.run -m`: checks an Optuna search before it starts and
makes a sweep with a failed job exit non-zero, whatever the sweeper or launcher.

Why: Hydra's basic sweeper already raises after its batch when a job failed, but the
Optuna sweeper (max_failure_rate 1.0) tells Optuna FAIL and returns normally, so the
process would exit 0. Here, at the end of a sweep, every job folder whose error.json
(written by lab.run) is newer than the sweep's start counts as failed: one line names
them and the process exits with status 1. Before the first trial, an Optuna search over a
key the config lacks, with a malformed task.objective, or in the direction opposite to the
objective's mode, stops with one line instead of failing (or misranking) every trial. Every
task returns its objective (lab.run: objective_of(cfg).value(metrics)). The Optuna sweeper
writes no multirun.yaml; this writes one, so lab.report finds and reads the sweep.

Registered in conf/hydra/default.yaml (hydra.callbacks.sweep_status). Importing it is
cheap: no torch, no lab.run; each hook imports what it needs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lab.config.objective import objective_of
from lab.errors import ConfigError
from lab.results.sweep import job_folders, load_sweep
from lab.runs import folder as run_folder

_MISSING = object()


class SweepStatus(Callback):
    """on_multirun_start: check an Optuna search, write multirun.yaml; on_multirun_end: exit 1
    with a one-line summary when some job of this sweep failed."""

    def __init__(self) -> None:
        self.started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        if not _is_optuna(config):
            return  # the basic sweeper checks its jobs (lab.config.sweep_checks, Hydra) and writes multirun.yaml itself
        problem = optuna_problem(config)
        if problem:
            _fail(problem, status=2)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(config, sweep_dir / run_folder.MULTIRUN)
        except OSError as err:
            _fail(f"cannot write into the sweep folder {sweep_dir}: {err.strerror or err}", status=2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if config.get("study") is not None:
            print_study_report(sweep_dir)
        failed = failed_jobs(sweep_dir, since=self.started - 1.0)
        if not failed:
            return
        total = len(job_folders(sweep_dir))
        what = "trials" if _is_optuna(config) else "jobs"
        shown = "; ".join(f"job {name}: {error}" for name, error in failed[:3])
        more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
        done = " (Optuna: FAIL, the study finished)" if _is_optuna(config) else ""
        _fail(f"{len(failed)} of {total} {what} failed{done}: {shown}{more}; "
              f"table: python -m lab.report {sweep_dir}", status=1)


def print_study_report(sweep_dir: Path) -> None:
    """A study's report (lab.results.study) into its folder, its findings on the console; a report
    that cannot be made says why in one line and leaves the sweep's own outcome alone."""
    from lab.errors import LabError
    from lab.results.study import print_findings, write_report
    from lab.utils.console import console, print_error

    try:
        made = write_report(load_sweep(sweep_dir))
    except LabError as err:
        print_error(f"study report not written: {err}")
        return
    if made is not None:
        print_findings(made[0], table=True)
        console.print(f"study report: {sweep_dir / 'study.md'}", markup=False, highlight=False)


def _is_optuna(config: DictConfig) -> bool:
    return "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).lower()


def optuna_problem(config: DictConfig) -> str | None:
    """Why an Optuna search on this config cannot work (one line), or None."""
    choices = OmegaConf.select(config, "hydra.runtime.choices", default={}) or {}
    try:
        objective = objective_of(config)
    except ConfigError as err:
        return str(err)
    try:
        direction = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
    except Exception:  # noqa: BLE001 - an interpolation that cannot resolve here: Optuna's own check reports it
        direction = None
    if isinstance(direction, str) and direction != objective.direction:
        return (f"hydra.sweeper.direction={direction}, but lab.run returns {objective.best_key}, which "
                f"task.objective ({objective.metric}, mode {objective.mode}) says to {objective.direction}; "
                f"drop the direction override or set task.objective.mode")
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    what = ", ".join(f"{g}={choices[g]}" for g in ("experiment", "model", "optimizer") if choices.get(g))
    for key in params:
        key = str(key)
        if key.startswith(("+", "~")) or OmegaConf.select(config, key, default=_MISSING) is not _MISSING:
            continue
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(config, parent, default=None) if parent else config
        have = f"; {parent} has {', '.join(map(str, node.keys()))}" if isinstance(node, DictConfig) else ""
        return (f"hydra.sweeper.params searches {key}, which this config ({what}) does not have{have}; "
                f"copy conf/hparams_search/optuna.yaml to conf/hparams_search/<name>.yaml, search a key "
                f"the config has, and pass hparams_search=<name>")
    return None


def failed_jobs(sweep_dir: Path, since: float = 0.0) -> list[tuple[str, str]]:
    """(job folder name, one-line error) for each job whose error.json was written after `since`."""
    import json

    failed = []
    for folder in job_folders(sweep_dir):
        path = folder / run_folder.ERROR
        try:
            if path.stat().st_mtime < since:
                continue  # left by an earlier sweep into the same folder
            error = json.loads(path.read_text())
            message = " ".join(str(error.get("error") or "(no message)").split())
        except FileNotFoundError:
            continue
        except (OSError, ValueError, AttributeError):
            message = f"unreadable {run_folder.ERROR}"
        failed.append((folder.name, message))
    return failed


def _fail(message: str, status: int) -> None:
    """Print `error: <message>` and exit: SystemExit passes through Hydra's callback wrapper,
    which turns any Exception into a warning."""
    from lab.utils.console import print_error

    print_error(message)
    sys.stdout.flush()
    raise SystemExit(status)
