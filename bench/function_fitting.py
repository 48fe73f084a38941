"""Framework tax of function fitting: `experiment=mlp_function` through lab vs a plain PyTorch loop.

Both do the same N full-batch Adam steps (default 1,000) of the 1-64-64-1 sigmoid MLP on
the same 1,000 points of f2, from the same initial weights (seed 42, built by the same
code), in this one process, alternating:

- lab: lab.train.fit.train, the function `python -m lab.run experiment=mlp_function` runs, on
  the config that command composes, with logging, checkpoints, the progress bar and
  the curve images at their defaults. Timed: trainer.fit (sanity check, training,
  validation, checkpoints, TensorBoard, plots, the final PNG). Also printed: lab.run's
  own wall_time_s, which adds the test of the best checkpoint.
- plain: zero_grad / forward / MSE / backward / Adam step in a Python loop.

Reported: the median over the repeats of lab/plain within each back-to-back pair (the
figure), and the best time of each side.
The first pair is a warm-up, printed but not counted: the first run in a process also
pays one-time lazy imports (TensorBoard's writer, Pillow's fonts) inside trainer.fit.
The final training MSE of each run is printed: equal values show both did the same steps.
One torch thread by default: on a 2-core machine that is doing anything else, torch's
two OpenMP threads wait on each other and a run's time swings tenfold; both sides always
use the same setting.
    .venv/bin/python bench/function_fitting.py [--steps 1000] [--repeats 5] [--threads 1] [override ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import compose, fit_clock  # noqa: E402  (bench/ is not a package)

OVERRIDES = ["experiment=mlp_function"]


def run_lab(overrides: list[str], run_dir: Path) -> tuple[float, float, float, float]:
    """(trainer.fit seconds, its CPU seconds, lab.run's wall_time_s, final train/mse) of one lab run."""
    from lab.train.fit import train

    clock = fit_clock((time.perf_counter, time.process_time))
    metrics = train(compose(overrides, run_dir), callbacks=[clock])  # prints what `python -m lab.run` prints
    return (*clock.fits[0], float(metrics["wall_time_s"]), float(metrics["train/mse"]))


def run_plain(overrides: list[str]) -> tuple[float, float, float]:
    """(seconds, CPU seconds, final training MSE) of the same steps as a plain PyTorch loop."""
    import torch
    from hydra.utils import instantiate

    cfg = compose(overrides)
    data = instantiate(cfg.data, seed=cfg.seed)
    data.setup("fit")
    x, y = data.splits["train"]
    from lab.utils.seeds import stream_seed

    torch.manual_seed(stream_seed(cfg.seed, "weights", bits=32))  # as lab seeds the model's initial weights
    model = instantiate(cfg.model, **data.model_inputs()).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr, betas=tuple(cfg.optimizer.betas))
    loss_fn = torch.nn.MSELoss()
    steps = int(cfg.trainer.max_epochs)

    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start, time.process_time() - cpu, loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="extra lab overrides, e.g. task.chunk=100")
    parser.add_argument("--steps", type=int, default=1000, help="full-batch steps (= study epochs)")
    parser.add_argument("--repeats", type=int, default=5, help="lab/plain pairs after the warm-up")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for both (0: torch's default, one per core)")
    args = parser.parse_args()

    import warnings

    import torch

    warnings.filterwarnings("ignore")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    overrides = [*OVERRIDES, f"trainer.max_epochs={args.steps}", *args.overrides]
    runs: dict[str, list[float]] = {k: [] for k in ("fit", "fit_cpu", "wall", "plain", "plain_cpu")}
    lines = []
    with tempfile.TemporaryDirectory(prefix="bench-function-") as tmp:
        for rep in range(args.repeats + 1):
            if rep % 2:  # alternate which side goes first, so a drift in the machine's speed hits both
                fit_s, fit_cpu, wall_s, lab_mse = run_lab(overrides, Path(tmp) / f"lab{rep}")
                plain_s, plain_cpu, plain_mse = run_plain(overrides)
            else:
                plain_s, plain_cpu, plain_mse = run_plain(overrides)
                fit_s, fit_cpu, wall_s, lab_mse = run_lab(overrides, Path(tmp) / f"lab{rep}")
            label = "warm-up " if rep == 0 else f"repeat {rep}"
            lines.append(f"{label}: lab fit {fit_s:.3f} s (cpu {fit_cpu:.3f} s, with the test {wall_s:.3f} s, "
                         f"train/mse {lab_mse:.6g})   plain {plain_s:.3f} s (cpu {plain_cpu:.3f} s, "
                         f"mse {plain_mse:.6g})   ratio {fit_s / plain_s:.3f}")
            if rep > 0:
                for key, value in zip(runs, (fit_s, fit_cpu, wall_s, plain_s, plain_cpu)):
                    runs[key].append(value)
    print("\n" + "\n".join(lines))
    # The figure: the median of the per-pair ratios. Each pair runs back to back, so a change in
    # the machine's speed (a shared or virtual machine) mostly cancels; best-of-N is printed too.
    ratio = statistics.median(f / p for f, p in zip(runs["fit"], runs["plain"]))
    best = {key: min(values) for key, values in runs.items()}
    print(f"\n{args.steps} full-batch Adam steps, 1-64-64-1 sigmoid MLP, 1,000 points; {args.repeats} pairs; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPU(s), "
          f"{platform.processor() or platform.machine()}")
    print(f"lab   (experiment=mlp_function, trainer.fit): median {statistics.median(runs['fit']):.3f} s, "
          f"best {best['fit']:.3f} s   (with the test: best {best['wall']:.3f} s)")
    print(f"plain (PyTorch loop):                         median {statistics.median(runs['plain']):.3f} s, "
          f"best {best['plain']:.3f} s")
    print(f"lab / plain: {ratio:.3f}  (median of the pairs' ratios; target <= 1.2)   "
          f"best / best: {best['fit'] / best['plain']:.3f}   CPU time, best / best: "
          f"{best['fit_cpu'] / best['plain_cpu']:.3f}   with the test, best / best: {best['wall'] / best['plain']:.3f}")


if __name__ == "__main__":
    main()
