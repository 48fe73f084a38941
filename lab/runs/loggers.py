"""What lab sends to each experiment logger: pictures, and the run's summary (its parameters;
the final metrics are the scalars Lightning already logged).

Lightning sends the scalars to every logger itself. Everything else a callback or lab.train.fit
logs goes through here, so that it reaches every chosen logger that can hold it, whatever the
mix (`logger=[tensorboard,mlflow]`):

| what               | TensorBoardLogger      | MLFlowLogger                      | WandbLogger                  |
| ------------------ | ---------------------- | --------------------------------- | ---------------------------- |
| a picture          | add_image (HWC)        | client.log_image(key=tag, step=)  | log_image(key=tag, step=)    |
| the run's summary  | HParams session entry  | params (the summary's metrics are | config, then the run is      |
|                    |                        | the run's latest metric values)   | finished (summary = last)    |

CSVLogger holds neither. mlflow and wandb are optional extras (`pip install -e '.[mlflow]'`):
they are imported by Lightning's loggers only, never here, and `build_loggers` turns a missing
one into a one-line error naming the install command. It also opens MLflow's SQLite store one
process at a time (parallel sweep jobs share it) and names MLflow/W&B runs after their folders.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


@dataclass(frozen=True)
class Tracker:
    """An optional tracker: the modules its Lightning logger imports, and how to install them."""

    extra: str  # pyproject's optional-dependencies group: pip install -e '.[extra]'
    packages: str  # the same, by package name
    modules: tuple[str, ...]
    sql_modules: tuple[str, ...] = ()  # only needed with a SQL tracking store (sqlite:///...)


# Keyed by the logger class's name; the packages match pyproject.toml's extras (tests/test_trackers.py).
TRACKERS = {
    "MLFlowLogger": Tracker("mlflow", "mlflow-skinny sqlalchemy alembic", ("mlflow",), ("sqlalchemy", "alembic")),
    "WandbLogger": Tracker("wandb", "wandb", ("wandb",)),
}
# The keyword that names the run, for the trackers whose config leaves it null.
RUN_NAME_ARG = {"MLFlowLogger": "run_name", "WandbLogger": "name"}
_MLFLOW_KEY = re.compile(r"[^a-zA-Z0-9_/. -]+")  # characters MLflow refuses in a key
SQLITE = "sqlite:///"  # then a path: relative (outputs/mlflow.db) or absolute (sqlite:////abs/mlflow.db)


# ------------------------------------------------------------------ building the loggers


def build_loggers(cfg: DictConfig) -> list[Any]:
    """The loggers of `cfg.logger` (one node per chosen group entry), instantiated: a tracker that
    is not installed fails with one line (lab.errors.ConfigError) instead of Hydra's traceback, and
    MLflow/W&B runs left unnamed are named after the run folder."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    nodes = {key: node for key, node in (cfg.get("logger") or {}).items() if node}
    kinds = {key: str(node.get("_target_", "")).rsplit(".", 1)[-1] for key, node in nodes.items()}
    for key, node in nodes.items():  # all checked before any is built (and Lightning imported)
        tracker = TRACKERS.get(kinds[key])
        if tracker is not None:
            missing = [m for m in tracker.modules if not _importable(m)]
            if not missing and str(node.get("tracking_uri") or "").startswith("sqlite"):
                missing = [m for m in tracker.sql_modules if not _importable(m)]
            if missing:
                raise _missing(key, tracker, " and ".join(missing))
    _finish_leftover_wandb_run()
    found = []
    for key, node in nodes.items():
        extra = {}
        arg = RUN_NAME_ARG.get(kinds[key])
        if arg is not None and node.get(arg) is None:
            extra[arg] = run_label(cfg)
        try:
            if kinds[key] == "MLFlowLogger" and str(node.get("tracking_uri") or "").startswith(SQLITE):
                found.append(_mlflow_on_sqlite(node, extra))
            else:
                found.append(instantiate(node, _convert_="all", **extra))
        except InstantiationException as err:
            tracker = TRACKERS.get(kinds[key])
            if tracker is not None and isinstance(err.__cause__, ImportError):
                raise _missing(key, tracker, f"a module it imports ({err.__cause__})") from err
            raise
    return found


def _mlflow_on_sqlite(node: DictConfig, extra: dict[str, Any]) -> Any:
    """An MLFlowLogger on a SQLite file, built one process at a time: the parallel jobs of a sweep
    (hydra/launcher=joblib) share the file, and MLflow creates its tables, and then the experiment,
    when it first sees them, so two jobs starting together on a new database would both try
    (`table ... already exists`). Under an exclusive lock on <db>.lock the first creates the tables,
    the experiment and its run; the others find them and create only their runs."""
    from hydra.utils import instantiate

    database = Path(str(node.tracking_uri)[len(SQLITE):])
    database.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(database.with_name(database.name + ".lock")):
        logger = instantiate(node, _convert_="all", **extra)
        _ = logger.run_id  # the tables, the experiment and this run (rank 0 only: Lightning's rank_zero_experiment)
    return logger


@contextmanager
def _exclusive(path: Path):
    """An exclusive lock between processes (flock on `path`), held for the block."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; jobs started one after the other never race
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_label(cfg: DictConfig) -> str:
    """The run folder relative to the outputs root, e.g. runs/<time>_<name> or
    multiruns/<time>_<name>/0 (a sweep job's folder name alone, `0`, would say nothing);
    the folder's own name when it lies elsewhere."""
    out = Path(str(OmegaConf.select(cfg, "paths.output_dir")))
    root = OmegaConf.select(cfg, "paths.output_root", default=None)
    try:
        return out.resolve().relative_to(Path(str(root)).resolve()).as_posix()
    except (TypeError, ValueError):
        return out.name


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without a spec
        return False


def _missing(key: str, tracker: Tracker, what: str):
    from lab.errors import ConfigError

    python = Path(sys.executable)
    try:  # .venv/bin/python when run from the clone, the full path otherwise
        python = python.relative_to(Path.cwd())
    except ValueError:
        pass
    return ConfigError(f"logger={key} needs {what}, which is not installed: pip install -e '.[{tracker.extra}]' "
                       f"in lab's folder (or {python} -m pip install {tracker.packages})")


def _finish_leftover_wandb_run() -> None:
    """A W&B run still open in this process belongs to an earlier job of the same multirun that
    failed before lab finished it (Lightning never finishes W&B runs): closed as failed, or the
    next job's WandbLogger would log into it."""
    wandb = sys.modules.get("wandb")  # only if some logger imported it: wandb is optional
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.run.finish(exit_code=1)


# ------------------------------------------------------------------ what lab logs


def _kinds(loggers: Iterable[Any]):
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            yield "tensorboard", logger
        elif isinstance(logger, MLFlowLogger):
            yield "mlflow", logger
        elif isinstance(logger, WandbLogger):
            yield "wandb", logger


def image_loggers(loggers: Iterable[Any]) -> list[Any]:
    """The loggers that hold pictures: a callback draws one only when this is not empty."""
    return [logger for _, logger in _kinds(loggers)]


def log_image(loggers: Iterable[Any], tag: str, image: Any, step: int) -> None:
    """One RGB uint8 picture (H, W, 3) under `tag` at `step`, in every logger that holds pictures.

    MLflow keeps it as a time-stepped image of the run (artifacts images/<tag>+step+<step>+...png,
    shown with a step slider in the run's UI); W&B as a media file of the run's history."""
    for kind, logger in _kinds(loggers):
        if kind == "tensorboard":
            logger.experiment.add_image(tag, image, step, dataformats="HWC")
        elif kind == "mlflow":
            logger.experiment.log_image(logger.run_id, image, key=_MLFLOW_KEY.sub("_", tag), step=int(step))
        else:
            logger.log_image(key=tag, images=[image], step=step)


def log_run_summary(loggers: Iterable[Any], params: Mapping[str, Any], metric_keys: Sequence[str]) -> None:
    """The run's parameters and final metrics, written once at the end of the run, in each logger.

    TensorBoard: the HParams session entry (start and end summaries in an event file of its own),
    whose metric columns TensorBoard fills from the scalars already logged under `metric_keys`.
    MLflow: the parameters; its runs table shows each metric's latest value, the final one.
    W&B: the parameters as the run's config; its summary holds each metric's last value. The W&B
    run is then finished: this is the last thing a run logs, and Lightning never finishes it (in a
    multirun the next job, in the same process, would log into it)."""
    for kind, logger in _kinds(loggers):
        if kind == "tensorboard":
            _tensorboard_hparams(logger, params, metric_keys)
        elif kind == "mlflow":
            logger.log_hyperparams({_MLFLOW_KEY.sub("_", key): value for key, value in params.items()})
        else:
            logger.log_hyperparams(dict(params))
            logger.experiment.finish()


def _tensorboard_hparams(logger: Any, params: Mapping[str, Any], metric_keys: Sequence[str]) -> None:
    from torch.utils.tensorboard.summary import hparams
    from torch.utils.tensorboard.writer import FileWriter

    _, start, end = hparams(dict(params), {key: 0.0 for key in metric_keys})
    # An event file of its own in the run's log folder: TensorBoard reads a folder's files as
    # one run, and the metric values come from the scalars already logged there.
    writer = FileWriter(logger.log_dir)
    writer.add_summary(start)
    writer.add_summary(end)
    writer.close()
