"""The run folder's layout: one place names every file lab and Hydra leave in it.

    <run>/
      .hydra/config.yaml overrides.yaml hydra.yaml   Hydra's record of the launch
      .hydra/resume_<k>/                              the same for the k-th continuation
      config.yaml                                     the config the run used, resolved
      metrics.json                                    final metrics (written once, at the end)
      error.json                                      {"status": "failed", "error", "type"} of a failed run
      provenance.json                                 commit, diff hash, package versions, host, devices, command
      checkpoints/<best>.ckpt checkpoints/last.ckpt   the best epoch by the objective; the latest
      events.out.tfevents.*                           TensorBoard
    <sweep>/multirun.yaml, <sweep>/<job>/...          a sweep: its config, one run folder per job
    <sweep>/.launcher/<job>.log                       hydra/launcher=gpus: each job's console output

New run and sweep folders are claimed with `claim` (conf/hydra/default.yaml's ${lab_unique_dir:...}),
so two launches in the same second with the same name never share one.

No torch at import.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

HYDRA = ".hydra"
CONFIG = "config.yaml"
OVERRIDES = "overrides.yaml"
HYDRA_CONFIG = "hydra.yaml"
METRICS = "metrics.json"
ERROR = "error.json"
PROVENANCE = "provenance.json"
CHECKPOINTS = "checkpoints"
LAST = Path(CHECKPOINTS) / "last.ckpt"
MULTIRUN = "multirun.yaml"
OPTUNA_RESULTS = "optimization_results.yaml"


def hydra_file(run: Path, name: str = CONFIG) -> Path:
    """<run>/.hydra/<name>."""
    return Path(run) / HYDRA / name


def is_run(folder: Path) -> bool:
    """A folder Hydra launched a job in (it has .hydra/), finished or not."""
    return (Path(folder) / HYDRA).is_dir()


def is_sweep(folder: Path) -> bool:
    """A multirun folder (Hydra's basic sweeper or Optuna's)."""
    return (Path(folder) / MULTIRUN).is_file() or (Path(folder) / OPTUNA_RESULTS).is_file()


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def read_metrics(run: Path) -> dict[str, Any]:
    """A finished run's metrics.json, numbers as floats ("nan" strings back to nan)."""
    saved = json.loads((Path(run) / METRICS).read_text())
    return {k: float(v) if isinstance(v, (int, float, str)) and _is_number(v) else v for k, v in saved.items()}


def write_metrics(run: Path, metrics: dict[str, Any]) -> None:
    from lab.utils.io import write_json

    write_json(Path(run) / METRICS, metrics)


def write_error(run: Path, message: str, kind: str) -> None:
    """error.json: {"status": "failed", "error": <one line>, "type": <exception class>}."""
    from lab.utils.io import write_json

    write_json(Path(run) / ERROR, {"status": "failed", "error": message, "type": kind})


MAX_SUFFIX = 9999  # <base>_1 ... <base>_9999: far more launches of one name in one second than any machine makes


def claim(base: str | os.PathLike) -> str:
    """Create a new, empty folder at `base`, or at `base_1`, `base_2`, ... when that one exists, and return
    its path (`base` as given plus the suffix). os.mkdir refuses an existing folder atomically, also across
    processes and on NFS, so of runs that pick the same name at the same moment each gets its own folder."""
    from lab.errors import ConfigError

    base = os.fspath(base).rstrip("/\\") or os.fspath(base)
    parent = os.path.dirname(base)
    try:
        if parent:
            os.makedirs(parent, exist_ok=True)
        for k in range(MAX_SUFFIX + 1):
            candidate = f"{base}_{k}" if k else base
            try:
                os.mkdir(candidate)
            except FileExistsError:
                continue
            return candidate
    except OSError as err:
        raise ConfigError(f"cannot create the run folder {base}: {err.strerror or err}; set LAB_OUTPUT_DIR "
                          "(paths.output_root), hydra.run.dir or hydra.sweep.dir to a writable folder") from err
    raise ConfigError(f"{base} and {base}_1 ... {base}_{MAX_SUFFIX} all exist; remove old folders there or give "
                      "the run another name (name=...)")
