"""The run folder's layout: one place names every file lab and Hydra leave in it.

    <run>/
      .hydra/config.yaml overrides.yaml hydra.yaml   Hydra's record of the launch
      .hydra/resume_<k>/                              the same for the k-th continuation
      config.yaml                                     the config the run used, resolved
      metrics.json                                    final metrics (written once, at the end)
      error.json                                      {"status": "failed", "error", "type"} of a failed run
      checkpoints/<best>.ckpt checkpoints/last.ckpt   the best epoch by the objective; the latest
      events.out.tfevents.*                           TensorBoard
    <sweep>/multirun.yaml, <sweep>/<job>/...          a sweep: its config, one run folder per job

No torch at import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HYDRA = ".hydra"
CONFIG = "config.yaml"
OVERRIDES = "overrides.yaml"
HYDRA_CONFIG = "hydra.yaml"
METRICS = "metrics.json"
ERROR = "error.json"
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
