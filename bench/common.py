"""What the benchmark scripts share: the Fashion-MNIST files, lab's config as a job sees it,
and a callback that times each `trainer.fit`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

FASHION = "/usr/share/datasets/fashion-mnist"  # where `apt-get install dataset-fashion-mnist` puts them


def compose(overrides: list[str], run_dir: Path | None = None):
    """The config `python -m lab.run <overrides>` composes; with `run_dir`, as lab.run's job sees it."""
    from lab.config.compose import compose as compose_config

    return compose_config(overrides, run_dir, drop_hydra=run_dir is not None)


def fit_clock(clocks: tuple[Callable[[], float], ...] = (time.perf_counter,)):
    """A callback that times each `trainer.fit` it joins, from its `setup` to its `teardown` hook,
    on each of `clocks`: its `.fits` gets one tuple of seconds per fit. Handed to a Trainer (or
    to `lab.train.fit.train(cfg, callbacks=...)`) like any callback; nothing of Lightning's is replaced."""
    import lightning as L

    class FitClock(L.Callback):
        def __init__(self) -> None:
            self.fits: list[tuple[float, ...]] = []
            self._starts: list[float] = []

        def setup(self, trainer, pl_module, stage: str) -> None:
            if stage == "fit":
                self._starts = [clock() for clock in clocks]

        def teardown(self, trainer, pl_module, stage: str) -> None:
            if stage == "fit":
                self.fits.append(tuple(clock() - start for clock, start in zip(clocks, self._starts)))

    return FitClock()
