"""lab's sweeper checks each distinct set of group choices once before the jobs run."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest


class RecordingLoader:
    """Stands in for Hydra's config loader: knows which keys are config groups, records compositions."""

    def __init__(self, groups: set[str], fails_on: str | None = None) -> None:
        self.repository = SimpleNamespace(group_exists=lambda key: key in groups)
        self.composed: list[list[str]] = []
        self.fails_on = fails_on

    def load_sweep_config(self, master_config, sweep_overrides):
        self.composed.append(list(sweep_overrides))
        if self.fails_on and self.fails_on in sweep_overrides:
            raise ValueError(f"cannot compose {sweep_overrides}")


def sweeper(loader: RecordingLoader):
    # Hydra's plugin scan (run by any earlier test that launched Hydra) reloads its sweeper
    # modules; reloading ours binds it to the BasicSweeper class now in sys.modules.
    from hydra_plugins.lab_sweeper import lab_sweeper

    s = importlib.reload(lab_sweeper).LabSweeper(max_batch_size=None)
    s.hydra_context = SimpleNamespace(config_loader=loader)
    s.config = object()
    return s


def test_a_value_only_sweep_is_composed_once():
    loader = RecordingLoader(groups={"model", "data"})
    batch = [["data=digits", f"seed={i}", "optimizer.lr=0.1"] for i in range(8)]
    sweeper(loader).validate_batch_is_legal(batch)
    assert loader.composed == [batch[0]]


def test_each_group_combination_is_composed():
    loader = RecordingLoader(groups={"model", "hydra/launcher"})
    batch = [[f"model={m}", f"optimizer.lr={lr}"] for m in ("small_cnn", "mlp") for lr in (0.1, 0.01)]
    sweeper(loader).validate_batch_is_legal(batch)
    assert loader.composed == [["model=small_cnn", "optimizer.lr=0.1"], ["model=mlp", "optimizer.lr=0.1"]]


def test_a_combination_that_cannot_compose_fails_before_any_job():
    loader = RecordingLoader(groups={"model"}, fails_on="model=mlp")
    batch = [["model=small_cnn", "seed=0"], ["model=small_cnn", "seed=1"], ["model=mlp", "seed=0"]]
    with pytest.raises(ValueError, match="model=mlp"):
        sweeper(loader).validate_batch_is_legal(batch)
