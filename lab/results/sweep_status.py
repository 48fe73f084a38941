"""Hydra callback for `python -m lab.run -m`: checks an Optuna search before it starts and
makes a sweep with a failed job exit non-zero, whatever the sweeper or launcher.

Why: Hydra's basic sweeper already raises after its batch when a job failed, but the
Optuna sweeper (max_failure_rate 1.0) tells Optuna FAIL and returns normally, so the
process would exit 0. Here, at the end of a sweep, every job folder whose error.json
(written by lab.run) is newer than the sweep's start counts as failed: one line names
them and the process exits with status 1. Before the first trial, an Optuna search over a
key the config lacks, or over a task whose run returns no val/top1_best (regression),
stops with one line instead of failing every trial. The Optuna sweeper writes no
multirun.yaml; this writes one, so lab.report finds and reads the sweep.

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

# Tasks whose runs log val/top1_best, the value lab.run's main() returns (the Optuna objective).
_TOP1_TASKS = ("lab.tasks.classification.ClassificationTask", "lab.tasks.metric_learning.MetricLearningTask")
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
            OmegaConf.save(config, sweep_dir / "multirun.yaml")
        except OSError as err:
            _fail(f"cannot write into the sweep folder {sweep_dir}: {err.strerror or err}", status=2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        failed = failed_jobs(sweep_dir, since=self.started - 1.0)
        if not failed:
            return
        total = len(_job_folders(sweep_dir))
        what = "trials" if _is_optuna(config) else "jobs"
        shown = "; ".join(f"job {name}: {error}" for name, error in failed[:3])
        more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
        done = " (Optuna: FAIL, the study finished)" if _is_optuna(config) else ""
        _fail(f"{len(failed)} of {total} {what} failed{done}: {shown}{more}; "
              f"table: python -m lab.report {sweep_dir}", status=1)


def _is_optuna(config: DictConfig) -> bool:
    return "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).lower()


def optuna_problem(config: DictConfig) -> str | None:
    """Why an Optuna search on this config cannot work (one line), or None."""
    target = str(OmegaConf.select(config, "task._target_", default=""))
    choices = OmegaConf.select(config, "hydra.runtime.choices", default={}) or {}
    task = choices.get("task") or target
    if target and target not in _TOP1_TASKS and "Classification" not in target:
        return (f"hparams_search=optuna maximizes val/top1_best, which task={task} ({target}) does not log "
                f"(lab.run returns val/top1_best); sweep a grid instead, e.g. -m sweep=lr or "
                f"optimizer.lr=0.001,0.01,0.1")
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


def _job_folders(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep: direct sub-folders holding Hydra's .hydra/."""
    if not sweep_dir.is_dir():
        return []
    return sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()),
                  key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def failed_jobs(sweep_dir: Path, since: float = 0.0) -> list[tuple[str, str]]:
    """(job folder name, one-line error) for each job whose error.json was written after `since`."""
    import json

    failed = []
    for folder in _job_folders(sweep_dir):
        path = folder / "error.json"
        try:
            if path.stat().st_mtime < since:
                continue  # left by an earlier sweep into the same folder
            error = json.loads(path.read_text())
            message = " ".join(str(error.get("error") or "(no message)").split())
        except FileNotFoundError:
            continue
        except (OSError, ValueError, AttributeError):
            message = "unreadable error.json"
        failed.append((folder.name, message))
    return failed


def _fail(message: str, status: int) -> None:
    """Print `error: <message>` and exit: SystemExit passes through Hydra's callback wrapper,
    which turns any Exception into a warning."""
    from lab.utils.console import print_error

    print_error(message)
    sys.stdout.flush()
    raise SystemExit(status)
