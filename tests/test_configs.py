"""Every config file composes, and the entry point stays light to import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lab.paths import config_dir
from tests.conftest import ROOT, compose

CONF = Path(config_dir())
OPTIONS = sorted(
    (group.name, f.stem)
    for group in CONF.iterdir()
    if group.is_dir() and group.name != "hydra"
    for f in group.glob("*.yaml")
)


def test_every_group_has_options():
    groups = {g for g, _ in OPTIONS}
    for required in ("data", "model", "task", "optimizer", "scheduler", "trainer", "logger", "callbacks", "paths",
                     "experiment", "sweep", "debug"):
        assert required in groups, f"conf/{required}/ is missing"


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes(group, option, tmp_path):
    cfg = compose([f"{group}={option}"], output_dir=tmp_path)
    assert cfg.hydra.runtime.choices[group] == option
    container = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert container["seed"] == 42


def test_default_config_shape(tmp_path):
    cfg = compose([], output_dir=tmp_path)
    assert cfg.data.name == "digits"
    assert cfg.model.name == "small_cnn"
    for optional in ("experiment", "sweep", "debug"):
        assert cfg.hydra.runtime.choices.get(optional) is None
    assert cfg.logger.tensorboard.default_hp_metric is False


def test_experiment_overrides_groups(tmp_path):
    cfg = compose(["experiment=cnn_fashionmnist"], output_dir=tmp_path)
    assert cfg.data.name == "fashion_mnist"
    assert cfg.trainer.max_epochs == 3
    cfg = compose(["experiment=cnn_fashionmnist", "trainer.max_epochs=7", "optimizer.lr=0.5"], output_dir=tmp_path)
    assert cfg.trainer.max_epochs == 7 and cfg.optimizer.lr == 0.5


def test_sweep_files_set_sweeper_params(tmp_path):
    for path in sorted((CONF / "sweep").glob("*.yaml")):
        cfg = compose([f"sweep={path.stem}"], output_dir=tmp_path)
        params = cfg.hydra.sweeper.params
        assert params, f"{path} sets no hydra.sweeper.params"
        for key in params:
            assert OmegaConf.select(cfg, key) is not None or key == "seed", f"{path}: {key} is not a config key"


def test_scheduler_none_is_null(tmp_path):
    assert compose(["scheduler=none"], output_dir=tmp_path).scheduler is None


def test_importing_the_entry_point_does_not_import_torch():
    code = ("import sys, lab.run; bad = [m for m in ('torch', 'lightning') if m in sys.modules]; "
            "print(bad); sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, f"lab.run imports {out.stdout.strip()} at module level"


def test_help_lists_groups_and_experiments():
    out = subprocess.run([sys.executable, "-m", "lab.run", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "cnn_fashionmnist" in out.stdout
    assert "digits*" in out.stdout and "optimizer" in out.stdout


def test_cfg_job_prints_composed_config():
    out = subprocess.run([sys.executable, "-m", "lab.run", "--cfg", "job", "optimizer.lr=0.123"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert OmegaConf.create(out.stdout).optimizer.lr == 0.123
