"""data=function: the points, the noise, the seeds, and the MLP they size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.data.function import TARGETS, FunctionDataModule
from lab.errors import ConfigError
from lab.models.mlp import MLP


def f2(x):
    return x**2 + 2 * np.cos(x) + 2 * np.exp(-x)


def make(**kwargs) -> FunctionDataModule:
    data = FunctionDataModule(**kwargs)
    data.setup("fit")
    return data


def test_sizes_shapes_and_range():
    data = make(n_train=50, n_val=20, n_test=30, x_min=-2, x_max=5)
    assert data.split_sizes() == {"train": 50, "val": 20, "test": 30}
    for x, y in data.splits.values():
        assert x.shape == y.shape and x.shape[1] == 1 and x.dtype == torch.float32
        assert x.min() >= -2 and x.max() <= 5
    assert data.model_inputs() == {"in_features": 1, "out_features": 1}
    (x, y), = list(data.train_dataloader())
    assert len(data.train_dataloader()) == 1 and x.shape == (50, 1)


def test_grid_includes_the_ends_and_targets_are_f2():
    data = make(n_train=7, x_min=-3, x_max=3)
    x, y = data.splits["train"]
    np.testing.assert_allclose(x.squeeze(1).numpy(), np.linspace(-3, 3, 7), atol=1e-6)
    np.testing.assert_allclose(y.squeeze(1).numpy(), f2(np.linspace(-3, 3, 7)), rtol=1e-6)


def test_random_sampling_draws_inside_the_range_not_a_grid():
    x = make(sampling="random", n_train=200).splits["train"][0].squeeze(1)
    steps = torch.diff(x)
    assert (steps >= 0).all() and steps.std() > 1e-3  # sorted, uneven
    assert -3 <= x.min() and x.max() <= 3


def test_noise_only_on_train_targets():
    clean, noisy = make(noise_std=0.0), make(noise_std=0.5)
    x, y = noisy.splits["train"]
    residual = (y - noisy.f(x)).squeeze(1)
    assert 0.4 < residual.std().item() < 0.6 and abs(residual.mean().item()) < 0.1
    assert torch.equal(clean.splits["train"][0], x)
    for split in ("val", "test"):
        xs, ys = noisy.splits[split]
        assert torch.allclose(ys, noisy.f(xs), atol=1e-6), f"{split} targets must be clean"
        assert torch.equal(ys, clean.splits[split][1])


def test_sampling_is_fixed_by_sample_seed_not_by_the_run_seed():
    kwargs = {"sampling": "random", "noise_std": 0.3}
    a, b = make(seed=1, **kwargs), make(seed=2, **kwargs)
    c = make(sample_seed=5, seed=1, **kwargs)
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split][0], b.splits[split][0])
        assert torch.equal(a.splits[split][1], b.splits[split][1])
        assert not torch.equal(a.splits[split][0], c.splits[split][0])
    # val and test are independent draws, not the same points
    assert not torch.equal(a.splits["val"][0], a.splits["test"][0][:200])


def test_sample_seed_null_follows_the_run_seed():
    a = make(sampling="random", sample_seed=None, seed=3)
    b = make(sampling="random", sample_seed=None, seed=3)
    c = make(sampling="random", sample_seed=None, seed=4)
    assert torch.equal(a.splits["train"][0], b.splits["train"][0])
    assert not torch.equal(a.splits["train"][0], c.splits["train"][0])


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_named_targets_are_finite_on_the_default_range(name):
    data = make(target=name, n_train=101)
    assert torch.isfinite(data.splits["train"][1]).all()
    assert data.target == name


def test_expr_replaces_target():
    data = make(target="sin", expr="2*x + 1", n_train=5)
    x, y = data.splits["train"]
    assert torch.allclose(y, 2 * x + 1) and data.target == "expr"


@pytest.mark.parametrize("kwargs,message", [
    ({"target": "nope"}, "data.target='nope' is not a known function"),
    ({"expr": "log(x)"}, "is not finite on [-3, 3]"),
    ({"expr": "1/x", "x_min": 0, "x_max": 1}, "is not finite"),
    ({"x_min": 1, "x_max": 1}, "data.x_min must be below data.x_max"),
    ({"n_train": 1}, "data.n_train must be at least 2"),
    ({"sampling": "sobol"}, "data.sampling must be one of grid, random"),
    ({"noise_std": -1}, "data.noise_std must be >= 0"),
])
def test_bad_settings_are_refused_when_the_datamodule_is_built(kwargs, message):
    with pytest.raises(ConfigError) as err:
        FunctionDataModule(**kwargs)
    assert message in str(err.value)


def test_curve_is_the_clean_function_on_a_dense_grid():
    x, y = make().curve(101)
    np.testing.assert_allclose(y.numpy(), f2(x.numpy().astype(np.float64)), rtol=1e-5)


def test_mlp_is_sized_from_function_data_and_from_images():
    net = MLP(**make().model_inputs(), widths=[64, 64], activation="sigmoid")
    sizes = [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert sizes == [(1, 64), (64, 64), (64, 1)]
    assert sum(p.numel() for p in net.parameters()) == 2 * 64 + 64 * 64 + 64 + 64 + 1
    assert net(torch.zeros(5, 1)).shape == (5, 1)
    images = MLP(in_channels=1, image_size=[8, 8], num_classes=10, widths=[32], activation="relu", dropout=0.1)
    assert images(torch.zeros(4, 1, 8, 8)).shape == (4, 10)
    assert any(isinstance(m, torch.nn.Dropout) for m in images.modules())


@pytest.mark.parametrize("kwargs,message", [
    ({"activation": "swish"}, "model.activation must be one of"),
    ({"dropout": 1.0}, "model.dropout must be in [0, 1)"),
    ({"widths": [64, 0]}, "model.widths must be a list of positive"),
    ({"widths": 64}, "model.widths must be a list of positive"),
])
def test_mlp_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError) as err:
        MLP(in_features=1, out_features=1, **kwargs)
    assert message in str(err.value)
