"""sweep=depth and sweep=decay_factor follow the config's model family and schedule, and a sweep
whose job cannot run stops before the first job, in one line naming the job and the value."""

from __future__ import annotations

import pytest

from lab.config.paths import config_dir
from lab.errors import ConfigError
from tests.test_configs import _sweeper_params
from tests.test_data import make_fake_mnist


@pytest.mark.parametrize("overrides, expected", [
    (["experiment=resnet_tinyimagenet", "sweep=decay_factor"], {"scheduler.factor": "0.1,0.2,0.5,0.99"}),
    (["experiment=cnn_tinyimagenet", "sweep=decay_factor"], {"scheduler.factor": "0.1,0.2,0.5,0.99"}),
    (["experiment=resnet18_cifar100", "sweep=decay_factor"], {"scheduler.gamma": "0.5,0.7,0.85,0.95"}),
    (["experiment=basecnn_imagefolder", "sweep=decay_factor"], {"scheduler.gamma": "0.1,0.2,0.5,0.99"}),
    (["experiment=cnn_tinyimagenet", "sweep=depth"], {"model.depth": "8,10,12"}),
    (["experiment=resnet_tinyimagenet", "sweep=depth"], {"model.depth": "11,15,19"}),
    (["experiment=resnet20_cifar10", "sweep=depth"], {"model.depth": "20,32,44,56,110"}),
])
def test_family_sweeps_take_the_values_of_the_configs_family(overrides, expected):
    assert _sweeper_params(overrides) == expected


@pytest.mark.parametrize("overrides, message", [
    (["experiment=cnn_fashionmnist", "sweep=decay_factor"],
     "sweep=decay_factor has no values for scheduler=cosine .*it sweeps scheduler=exponential, multistep, plateau"),
    (["experiment=mlp_function", "sweep=depth"], "sweep=depth has no values for model=mlp .*it sweeps model=cnn"),
])
def test_a_family_without_the_knob_is_refused_in_one_line(overrides, message):
    from lab.config.sweep_checks import check_sweep

    with pytest.raises(ConfigError, match=message):
        check_sweep(["-m", *overrides], config_dir(), build=False)


def _fashion(tmp_path):
    make_fake_mnist(tmp_path / "fm", n_train=300, n_test=50)
    return ["data=fashion_mnist", f"data.root={tmp_path / 'fm'}", "data.download=false", "data.val_size=50"]


def test_preflight_builds_every_distinct_job_and_names_the_one_that_cannot_run(tmp_path):
    from lab.config.sweep_checks import check_sweep

    data = _fashion(tmp_path)
    small = ["model.widths=[4,8,8,8]", "model.stem_width=4", "model.hidden=8"]
    # every depth builds on the meta device; seeds do not multiply the checks
    check_sweep(["-m", "experiment=cnn_tinyimagenet", *data, *small, "sweep=depth", "seed=0,1,2"], config_dir())
    with pytest.raises(ConfigError, match=r"^sweep job scheduler.factor=1.0 cannot run: Factor should be < 1.0"):
        check_sweep(["-m", "experiment=cnn_tinyimagenet", *data, *small, "scheduler.factor=0.1,1.0"], config_dir())
    with pytest.raises(ConfigError, match=r"^sweep job model.depth=9 cannot run: .*model.depth for cnn must be even"):
        check_sweep(["-m", "experiment=cnn_tinyimagenet", *data, *small, "model.depth=8,9"], config_dir())
    # a command-line value replaces the sweep file's values, as in Hydra's sweeper
    with pytest.raises(ConfigError, match=r"^sweep job optimizer.lr=-1 .*optimizer.lr must be positive"):
        check_sweep(["-m", "experiment=cnn_tinyimagenet", *data, *small, "sweep=lr", "optimizer.lr=0.1,-1"],
                    config_dir())


def test_sweep_jobs_follow_hydras_basic_sweeper():
    from lab.config.preflight import distinct, sweep_jobs

    jobs = sweep_jobs(["x=1"], ["seed=0,1"], {"model.depth": "8,10"})
    assert jobs == [["model.depth=8", "x=1", "seed=0"], ["model.depth=8", "x=1", "seed=1"],
                    ["model.depth=10", "x=1", "seed=0"], ["model.depth=10", "x=1", "seed=1"]]
    assert distinct(jobs) == [["model.depth=8", "x=1", "seed=0"], ["model.depth=10", "x=1", "seed=0"]]
    assert sweep_jobs(["optimizer.lr=0.5"], [], {"optimizer.lr": "0.1,0.2"}) == [["optimizer.lr=0.5"]]


@pytest.mark.slow
@pytest.mark.parametrize("sweep, jobs, key, values", [
    ("decay_factor", 4, "scheduler.factor", ["0.1", "0.2", "0.5", "0.99"]),
    ("depth", 3, "model.depth", ["11", "15", "19"]),
])
def test_resnet_tinyimagenet_sweeps_run_on_a_tiny_imagenet_tree(tmp_path, sweep, jobs, key, values):
    """The acceptance commands, on a 3-class tree in the official layout, narrow and short."""
    import yaml

    from tests.conftest import run_cli
    from tests.fixtures import make_tiny_imagenet

    make_tiny_imagenet(tmp_path / "data", per_class=12, val_per_class=4)
    out = tmp_path / "sweep"
    result = run_cli(["-m", "experiment=resnet_tinyimagenet", f"sweep={sweep}", f"data.root={tmp_path / 'data'}",
                      "data.download=false", "data.batch_size=16", "model.widths=[4,8,8,8]", "model.stem_width=4",
                      "model.hidden=8", "trainer.max_epochs=1", f"hydra.sweep.dir={out}"], cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ran = []
    for job in range(jobs):
        assert (out / str(job) / "metrics.json").is_file()
        overrides = yaml.safe_load((out / str(job) / ".hydra" / "overrides.yaml").read_text())
        ran += [o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")]
    assert ran == values
