"""The model contract and the objective: checked when the model is built, one line naming what is
missing or wrong."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lab.config.objective import Objective, objective_of
from lab.errors import ConfigError
from lab.models.contract import ImageClassifier, check_inputs, check_model
from tests.conftest import QUICK, compose, run_in_process

IMAGE = {"in_channels": 1, "num_classes": 10, "image_size": [8, 8]}


class NoFeatures(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels * image_size[0] * image_size[1], num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class WrongHead(NoFeatures):
    def __init__(self, in_channels: int, num_classes: int, image_size) -> None:
        super().__init__(in_channels, num_classes, image_size)
        self.extra = nn.Linear(num_classes, 3)

    def features(self, x):
        return x.flatten(1)


class Meets(NoFeatures):
    def features(self, x):
        return x.flatten(1)

    def forward(self, x):
        return self.fc(self.features(x))


class TakesNoSizes(nn.Module):
    def __init__(self, hidden: int = 4) -> None:
        super().__init__()


def test_a_model_that_meets_the_contract_passes_and_is_an_image_classifier():
    model = Meets(**IMAGE)
    check_model(model, IMAGE, "tests.Meets")
    assert isinstance(model, ImageClassifier)
    check_model(nn.Linear(1, 1), {"in_features": 1, "out_features": 1})  # regression: any module


@pytest.mark.parametrize("model, missing", [
    (NoFeatures(**IMAGE), "features(x)"),
    (WrongHead(**IMAGE), "a final nn.Linear with num_classes=10 outputs (its last is extra with 3)"),
])
def test_what_a_model_lacks_is_named_in_one_line(model, missing):
    with pytest.raises(ConfigError, match="does not meet lab's model contract") as err:
        check_model(model, IMAGE, "my.Model")
    assert missing in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not a torch.nn.Module"):
        check_model(object(), IMAGE)


def test_a_model_that_does_not_take_the_datas_arguments_is_named():
    with pytest.raises(ConfigError, match="does not take in_channels, num_classes, image_size, which the data"):
        check_inputs(TakesNoSizes, IMAGE, "my.TakesNoSizes")
    check_inputs(Meets, IMAGE, "tests.Meets")


def test_the_contract_is_checked_when_a_run_builds_its_model(tmp_path):
    from omegaconf import OmegaConf, open_dict

    from lab.build import build_parts

    cfg = compose([], tmp_path)
    with open_dict(cfg):
        cfg.model = OmegaConf.create({"_target_": f"{__name__}.NoFeatures", "name": "no_features"})
    with pytest.raises(ConfigError, match=f"model {__name__}.NoFeatures does not meet lab's model contract"):
        build_parts(cfg)


@pytest.mark.parametrize("node, message", [
    ({"metric": "val/top1", "mode": "up"}, "task.objective.mode must be max or min, got 'up'"),
    ({"metric": "top1", "mode": "max"}, "task.objective.metric must be a validation metric"),
    ({"metric": "val/top1", "direction": "max"}, "task.objective must be {metric: <val/...>, mode: max|min}"),
])
def test_a_bad_objective_is_one_line(node, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("{", r"\{").replace("|", r"\|")):
        Objective.of(node)


def test_the_objective_is_read_from_the_config_and_ranks_runs(tmp_path):
    assert objective_of(compose([], tmp_path)) == Objective("val/top1", "max")
    regression = objective_of(compose(["experiment=mlp_function"], tmp_path))
    assert regression == Objective("val/mse", "min") and regression.direction == "minimize"
    assert regression.value({"val/mse": 0.5, "val/mse_best": 0.2}) == 0.2
    assert regression.better(0.1, 0.2) and not Objective().better(0.1, 0.2)
    plateau = compose(["experiment=mlp_function", "scheduler=plateau"], tmp_path)
    assert plateau.scheduler.mode == "min"  # the schedule watches the objective in its direction


def test_an_objective_the_task_does_not_log_stops_the_run_naming_what_it_logs(tmp_path):
    with pytest.raises(ConfigError, match=r"task.objective.metric=val/f1 is not a metric ClassificationTask logs; "
                                          r"choose one of val/loss, val/top1, val/top5"):
        run_in_process([*QUICK, "task.objective.metric=val/f1", "logger=none"], tmp_path)


def test_the_run_returns_its_objective_to_hydras_sweepers(tmp_path):
    metrics = run_in_process([*QUICK, "task.objective.metric=val/loss", "task.objective.mode=min", "logger=none"],
                             tmp_path)
    assert objective_of(compose(["task.objective.metric=val/loss", "task.objective.mode=min"], tmp_path)).value(
        metrics) == metrics["val/loss_best"]
    assert "val/top1_best" not in metrics
    assert torch.isfinite(torch.tensor(metrics["val/loss_best"]))
