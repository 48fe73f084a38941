"""Every config file composes, and the entry point stays light to import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lab.config.paths import config_dir
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


# A config with the knob each sweep turns (the sweep's intended study).
SWEEP_TARGETS = {
    "augmentation": ["experiment=resnet18_cifar100"], "decay_factor": ["experiment=resnet18_cifar100"],
    "depth": ["experiment=cnn_tinyimagenet"],
    "dropout": ["experiment=cnn_fashionmnist"], "epochs": ["experiment=mlp_function"], "lr": [],
    "momentum": ["experiment=basecnn_imagefolder"], "noise_ratio": [], "normalization": [],
    "residual": ["experiment=resnet_tinyimagenet"], "seeds": [], "metric_loss": ["experiment=triplet_fashionmnist"],
    "loss": ["experiment=basecnn_imagefolder"], "folds": [],
}


def _sweeper_params(overrides: list[str]) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
    return dict(cfg.hydra.sweeper.params or {})


@pytest.mark.parametrize("sweep", sorted(p.stem for p in (CONF / "sweep").glob("*.yaml")))
def test_sweep_matches_its_study(sweep):
    from lab.config.sweep_checks import check_sweep

    assert sweep in SWEEP_TARGETS, f"add conf/sweep/{sweep}.yaml's study to SWEEP_TARGETS"
    params = _sweeper_params([f"sweep={sweep}", *SWEEP_TARGETS[sweep]])
    assert params, f"{sweep}.yaml sets no hydra.sweeper.params for {SWEEP_TARGETS[sweep]}"
    check_sweep(["-m", f"sweep={sweep}", *SWEEP_TARGETS[sweep]], str(CONF), build=False)


def test_sweep_without_its_knob_is_refused_in_one_line():
    from lab.config.sweep_checks import check_sweep
    from lab.errors import ConfigError

    with pytest.raises(ConfigError, match="sweep=momentum sets optimizer.momentum, which this config"):
        check_sweep(["-m", "sweep=momentum", "optimizer=adam"], str(CONF))
    with pytest.raises(ConfigError, match="available sweep options: .*dropout"):
        check_sweep(["-m", "sweep=nope"], str(CONF))


def test_dropout_pairs():
    pairs = sorted((float(c.model.dropout_conv), float(c.model.dropout_fc))
                   for c in (OmegaConf.load(p) for p in (CONF / "dropout").glob("*.yaml")))
    assert pairs == [(0, 0), (0.1, 0.1), (0.1, 0.3), (0.2, 0.2), (0.2, 0.5), (0.3, 0.7)]


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


def test_a_config_group_option_from_hydras_search_path_is_not_refused(tmp_path):
    """Extensions may live outside conf/ (hydra.searchpath): the early option check leaves those to Hydra."""
    from lab.config.paths import config_dir
    from lab.config.sweep_checks import check_sweep
    from lab.errors import ConfigError

    with pytest.raises(ConfigError, match="data=mine: no such option"):
        check_sweep(["data=mine"], config_dir())
    check_sweep([f"hydra.searchpath=[file://{tmp_path}]", "data=mine"], config_dir())
