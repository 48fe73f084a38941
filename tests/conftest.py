"""Shared fixtures: compose lab's config with Hydra's compose API, run jobs in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch):
    """Keep runs off the network and out of the user's outputs/ folder."""
    monkeypatch.setenv("LAB_DATA_DIR", "/nonexistent-lab-data")
    yield


def compose(overrides: list[str], output_dir: Path | None = None):
    """The config `python -m lab.run <overrides>` would see, with Hydra's runtime filled in."""
    from lab.config.compose import compose as compose_config

    return compose_config(overrides, output_dir)


def run_in_process(overrides: list[str], output_dir: Path) -> dict:
    """lab.train.fit.train on a composed config, in this process (no re-import of torch)."""
    from lab.config.compose import compose as compose_config
    from lab.train.fit import train

    return train(compose_config(overrides, output_dir, drop_hydra=True))


def run_cli(args: list[str], cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m lab.run <args>` in a subprocess, the way a user types it."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "lab.run", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


# A few batches per split, 2 epochs: the whole pipeline in seconds.
QUICK = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]
