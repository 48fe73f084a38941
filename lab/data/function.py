"""Points of a 1-D function y = f(x) for regression: `data=function`.

The target is a named formula (TARGETS) or any formula in x given as `data.expr`,
parsed by lab.data.expression (never executed as Python). Training points are a
grid or uniform random draws over [x_min, x_max], with optional Gaussian noise on
their targets; val and test points are independent uniform draws with clean targets,
so val/test scores measure how well the net matches the true function between the
training points.

Training is full-batch: every loader yields its whole split as one (x, y) batch of
shape [N, 1]. The sampling is fixed by `sample_seed`, independent of the training
seed, so an lr, epoch or seed sweep compares nets on the same points.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch

from lab.data.expression import Expression
from lab.errors import ConfigError
from lab.utils.seeds import generator

# Named targets, written in the same formula language as data.expr.
TARGETS = {
    "sin": "sin(x)",
    "cos": "cos(x)",
    "square": "x**2",
    "cube": "x**3",
    "abs": "abs(x)",
    "exp": "exp(x)",
    "gauss": "exp(-x**2)",
    "step": "sign(x)",
    "wave": "sin(3*x) + 0.5*x",
    "f2": "x**2 + 2*cos(x) + 2*exp(-x)",
}
SAMPLINGS = ("grid", "random")


class FullBatch:
    """One (x, y) batch per pass: the whole split at once."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield self.x, self.y


class FunctionDataModule(L.LightningDataModule):
    """Train/val/test points of f over [x_min, x_max]; see the module docstring."""

    def __init__(
        self,
        target: str = "f2",
        expr: str | None = None,
        x_min: float = -3.0,
        x_max: float = 3.0,
        n_train: int = 1000,
        n_val: int = 200,
        n_test: int = 1000,
        sampling: str = "grid",
        noise_std: float = 0.0,
        sample_seed: int | None = 0,
        name: str = "function",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if expr is not None and str(expr).strip():
            self.formula = Expression(str(expr), key="data.expr")
            self.target = "expr"
        elif target in TARGETS:
            self.formula = Expression(TARGETS[target], key="data.target")
            self.target = target
        else:
            raise ConfigError(f"data.target={target!r} is not a known function; choose one of "
                              f"{', '.join(TARGETS)} or give a formula with data.expr='...'")
        self.x_min, self.x_max = float(x_min), float(x_max)
        if not self.x_min < self.x_max:
            raise ConfigError(f"data.x_min must be below data.x_max, got [{x_min}, {x_max}]")
        for key, value, least in (("n_train", n_train, 2), ("n_val", n_val, 2), ("n_test", n_test, 2)):
            if int(value) < least:
                raise ConfigError(f"data.{key} must be at least {least}, got {value}")
        self.n_train, self.n_val, self.n_test = int(n_train), int(n_val), int(n_test)
        if sampling not in SAMPLINGS:
            raise ConfigError(f"data.sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        self.sampling = sampling
        if not float(noise_std) >= 0.0:
            raise ConfigError(f"data.noise_std must be >= 0, got {noise_std}")
        self.noise_std = float(noise_std)
        self.sample_seed = int(seed if sample_seed is None else sample_seed)
        self.name = name
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._check_finite()

    # --- the protocol models and tasks read --------------------------------------
    def model_inputs(self) -> dict[str, object]:
        """A 1-D input and a 1-D output."""
        return {"in_features": 1, "out_features": 1}

    def task_inputs(self) -> dict[str, object]:
        return {}

    def f(self, x: torch.Tensor) -> torch.Tensor:
        """The clean target at x (float32, same shape)."""
        return self.formula(x.double()).float()

    def curve(self, n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
        """A dense grid over the range and the true function on it (for plots), each [n]."""
        x = torch.linspace(self.x_min, self.x_max, n, dtype=torch.float64)
        return x.float(), self.formula(x).float()

    def split_sizes(self) -> dict[str, int]:
        self.setup()
        return {k: len(v[0]) for k, v in self.splits.items()}

    # --- sampling ------------------------------------------------------------------
    def _generator(self, stream: str) -> torch.Generator:
        # the train, val and test draws (and the train targets' noise) are separate streams
        return generator(self.sample_seed, f"function_{stream}")

    def _uniform(self, n: int, stream: str) -> torch.Tensor:
        u = torch.rand(n, generator=self._generator(stream), dtype=torch.float64)
        return (self.x_min + (self.x_max - self.x_min) * u).sort().values

    def _check_finite(self) -> None:
        """Refuse a formula that is not finite over the range (log(x) on [-3, 3]) before anything runs."""
        x = torch.linspace(self.x_min, self.x_max, 2001, dtype=torch.float64)
        y = self.formula(x)
        bad = ~torch.isfinite(y)
        if bad.any():
            where = float(x[bad][0])
            raise ConfigError(f"{self.formula.key}={self.formula.source!r} is not finite on [{self.x_min:g}, "
                              f"{self.x_max:g}] (e.g. at x={where:g}); change the formula or the range")

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.sampling == "grid":
            x_train = torch.linspace(self.x_min, self.x_max, self.n_train, dtype=torch.float64)
        else:
            x_train = self._uniform(self.n_train, "train")
        y_train = self.formula(x_train)
        if self.noise_std > 0:
            y_train = y_train + self.noise_std * torch.randn(
                self.n_train, generator=self._generator("noise"), dtype=torch.float64)
        x_val, x_test = self._uniform(self.n_val, "val"), self._uniform(self.n_test, "test")
        splits = {"train": (x_train, y_train), "val": (x_val, self.formula(x_val)),
                  "test": (x_test, self.formula(x_test))}
        for key, (_, y) in splits.items():
            if not torch.isfinite(y).all():  # the range check samples 2001 points; random draws can hit others
                raise ConfigError(f"{self.formula.key}={self.formula.source!r} is not finite at some {key} point")
        self.splits = {k: (x.float().unsqueeze(1), y.float().unsqueeze(1)) for k, (x, y) in splits.items()}

    def train_dataloader(self) -> FullBatch:
        return FullBatch(*self.splits["train"])

    def val_dataloader(self) -> FullBatch:
        return FullBatch(*self.splits["val"])

    def test_dataloader(self) -> FullBatch:
        return FullBatch(*self.splits["test"])
