"""Every experiment composes and completes a fast dev run on fixture data of its format."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.config.paths import config_dir
from tests.conftest import run_in_process
from tests.fixtures import make_cifar10, make_cifar100, make_image_folder, make_tiny_imagenet
from tests.test_data import make_fake_mnist

EXPERIMENTS = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))
SMALL_BATCH = ["data.batch_size=4", "data.eval_batch_size=4"]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fixtures")
    make_tiny_imagenet(root / "tiny", per_class=4, val_per_class=2)
    make_cifar10(root / "cifar10", per_batch=12, n_test=12)
    make_cifar100(root / "cifar100", n_train=200, n_test=100)
    make_fake_mnist(root / "mnist", n_train=60, n_test=20)
    make_image_folder(root / "images", per_class=3, splits=("train", "val", "test"))
    return {"tinyimagenet": root / "tiny", "cifar10": root / "cifar10", "cifar100": root / "cifar100",
            "mnist": root / "mnist", "fashion_mnist": root / "mnist", "imagefolder": root / "images"}


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Path:
    """torchvision's weight files, written from randomly initialised models under the real
    file names, so pretrained=true goes through the real loading code offline."""
    import torch
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for arch, weights in (("resnet18", "ResNet18_Weights"), ("resnet50", "ResNet50_Weights"),
                          ("vgg16", "VGG16_Weights")):
        url = getattr(torchvision.models, weights).IMAGENET1K_V1.url
        torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), folder / Path(url).name)
    return home


def data_overrides(experiment: str, fixtures: dict[str, Path]) -> list[str]:
    from tests.conftest import compose

    cfg = compose([f"experiment={experiment}"])
    name = cfg.data.name
    if name == "function":
        return []
    extra = {"cifar10": ["data.val_size=10"], "cifar100": ["data.val_size=100"], "mnist": ["data.val_size=10"],
             "fashion_mnist": ["data.val_size=10"]}
    download = [] if name == "imagefolder" else ["data.download=false"]
    balanced = ["data.samples_per_class=2"] if cfg.data.get("samples_per_class") else []
    return [f"data.root={fixtures[name]}", *download, *SMALL_BATCH, *extra.get(name, []), *balanced]


def test_every_experiment_has_a_study_comment():
    for name in EXPERIMENTS:
        text = (Path(config_dir()) / "experiment" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_\n#"), f"{name}.yaml needs a comment on its study"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run(experiment, fixtures, torch_home, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    overrides = [f"experiment={experiment}", "debug=fast_dev_run", *data_overrides(experiment, fixtures)]
    if experiment.startswith("resnet18_cifar100"):
        overrides.append("upsample=false")
    metrics = run_in_process(overrides, tmp_path)
    test_keys = [k for k in metrics if k.startswith("test/")]
    assert test_keys, metrics


def test_upsample_switch(fixtures, torch_home, tmp_path):
    from tests.conftest import compose

    small = compose(["experiment=resnet18_cifar100"])
    big = compose(["experiment=resnet18_cifar100", "upsample=true"])
    assert small.data.resize is None and small.model.small_input_stem is True
    assert big.data.resize == 224 and big.model.small_input_stem is False
