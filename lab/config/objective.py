"""The objective of a run: one logged metric and whether higher or lower is better.

It is a config key, `task.objective` ({metric: val/top1, mode: max} for classification,
{metric: val/mse, mode: min} for regression), set by each task's YAML. Everything that
ranks runs or epochs reads it from here: the checkpoint callback (monitor, mode), a
plateau schedule (mode), the value lab.run hands Hydra's sweepers, the Optuna direction,
the sweep status and lab.report. A task logs `<metric>_best`, its best value so far.

No torch at import: lab.report and the command-line checks use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lab.errors import ConfigError

MODES = ("max", "min")


@dataclass(frozen=True)
class Objective:
    metric: str = "val/top1"
    mode: str = "max"

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric.startswith("val/"):
            raise ConfigError(f"task.objective.metric must be a validation metric such as val/top1, got "
                              f"{self.metric!r}")
        if self.mode not in MODES:
            raise ConfigError(f"task.objective.mode must be max or min, got {self.mode!r}")

    @classmethod
    def of(cls, node: Any) -> Objective:
        """From a `task.objective` node (a mapping with metric and mode), an Objective, or None (the default)."""
        if node is None:
            return cls()
        if isinstance(node, Objective):
            return node
        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)
        if not isinstance(node, Mapping) or set(node) - {"metric", "mode"}:
            raise ConfigError(f"task.objective must be {{metric: <val/...>, mode: max|min}}, got {node!r}")
        return cls(str(node.get("metric", cls.metric)), str(node.get("mode", cls.mode)))

    @property
    def best_key(self) -> str:
        """The key of the best value so far, which the task logs: `val/top1_best`."""
        return f"{self.metric}_best"

    @property
    def direction(self) -> str:
        """Optuna's and Hydra's word for the mode."""
        return "maximize" if self.mode == "max" else "minimize"

    def value(self, metrics: Mapping[str, Any]) -> float | None:
        """A finished run's objective: its best value, else the last one logged, else None."""
        for key in (self.best_key, self.metric):
            if metrics.get(key) is not None:
                return float(metrics[key])
        return None

    def better(self, a: float, b: float) -> bool:
        """Whether `a` beats `b`."""
        return a > b if self.mode == "max" else a < b


def objective_of(cfg: Any) -> Objective:
    """The objective of a composed (or saved) run config; a config without one gets the default."""
    node = OmegaConf.select(cfg, "task.objective", default=None) if isinstance(cfg, DictConfig) else \
        ((cfg or {}).get("task") or {}).get("objective")
    return Objective.of(node)
