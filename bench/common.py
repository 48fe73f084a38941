"""What the benchmark scripts share: the Fashion-MNIST files, lab's config as a job sees it,
and a way to time (and watch) the `trainer.fit` inside `lab.train.fit.train`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

FASHION = "/usr/share/datasets/fashion-mnist"  # where `apt-get install dataset-fashion-mnist` puts them


def compose(overrides: list[str], run_dir: Path | None = None):
    """The config `python -m lab.run <overrides>` composes; with `run_dir`, as lab.run's job sees it."""
    from lab.config.compose import compose as compose_config

    return compose_config(overrides, run_dir, drop_hydra=run_dir is not None)


@contextlib.contextmanager
def timed_fits(*callbacks, clocks: tuple[Callable[[], float], ...] = (time.perf_counter,)) -> Iterator[list]:
    """While active, every Trainer.fit also gets `callbacks`, and its duration on each of
    `clocks` is appended to the yielded list (one tuple per fit)."""
    import lightning as L

    fits: list[tuple[float, ...]] = []
    fit = L.Trainer.fit

    def timed_fit(self, *args, **kwargs):
        self.callbacks.extend(callbacks)
        starts = [clock() for clock in clocks]
        try:
            return fit(self, *args, **kwargs)
        finally:
            fits.append(tuple(clock() - start for clock, start in zip(clocks, starts)))

    L.Trainer.fit = timed_fit
    try:
        yield fits
    finally:
        L.Trainer.fit = fit
