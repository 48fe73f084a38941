"""Sweep overhead: what a multirun costs beyond its jobs' training.

`python -m lab.run -m data=digits trainer.max_epochs=1 seed=0,...,7` in a subprocess, the
way a user types it (the basic launcher: all jobs in one process). Each job's own
training part is its `wall_time_s` in metrics.json (trainer.fit plus the test of the best
checkpoint); the reference is their sum. Everything else is overhead: interpreter start and
imports (torch, Lightning, torchmetrics: paid once per process), Hydra's composition of each
job, building data/model/Trainer, writing configs, TensorBoard files and the HParams entry,
printing. A 1-job sweep, run alternately with the 8-job one, gives the once-per-process part;
the per-job overhead is what each further job adds:
    per job = (overhead of the 8-job sweep - overhead of the 1-job sweep) / 7   (target <= 1 s)
The all-in figure (8-job overhead / 8, start-up included) is printed too.
    .venv/bin/python bench/sweep_overhead.py [--jobs 8] [--repeats 2] [--json FILE] [override ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_sweep(jobs: int, overrides: list[str], folder: Path) -> tuple[float, float, list[float]]:
    """(total wall seconds, sum of the jobs' training seconds, per-job training seconds)."""
    seeds = ",".join(str(i) for i in range(jobs))
    cmd = [sys.executable, "-m", "lab.run", "-m", "data=digits", "trainer.max_epochs=1", f"seed={seeds}",
           f"hydra.sweep.dir={folder}", *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    total = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"error: the sweep failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    parts = [json.loads((folder / str(i) / "metrics.json").read_text())["wall_time_s"] for i in range(jobs)]
    return total, sum(parts), parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="extra lab overrides for every job")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="(1-job, N-job) sweep pairs")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.jobs < 2:
        sys.exit("error: --jobs must be >= 2 (the per-job figure compares against a 1-job sweep)")
    fixed, marginal, all_in, totals, trainings = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        for rep in range(args.repeats):
            one_total, one_trained, _ = one_sweep(1, args.overrides, Path(tmp) / f"one{rep}")
            total, trained, parts = one_sweep(args.jobs, args.overrides, Path(tmp) / f"sweep{rep}")
            start_up = one_total - one_trained
            per_job = ((total - trained) - start_up) / (args.jobs - 1)
            fixed.append(start_up)
            marginal.append(per_job)
            all_in.append((total - trained) / args.jobs)
            totals.append(total)
            trainings.append(trained)
            print(f"pair {rep + 1}: 1 job {one_total:.2f} s (training {one_trained:.2f} s, start-up {start_up:.2f} s); "
                  f"{args.jobs} jobs {total:.2f} s (training {trained:.2f} s, per job {min(parts):.2f}-"
                  f"{max(parts):.2f} s); per-job overhead {per_job:.3f} s", flush=True)
    med = statistics.median
    machine = f"{os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}"
    print(f"\n{args.jobs}-job multirun of 1-epoch digits runs vs a 1-job one, {args.repeats} pairs; {machine}")
    print(f"lab sweep total: {med(totals):.2f} s   sum of the jobs' training parts (reference): {med(trainings):.2f} s")
    print(f"once per process (interpreter, imports, first composition): {med(fixed):.2f} s")
    print(f"overhead per job: {med(marginal):.3f} s (median; target <= 1 s)   all-in per job (start-up included): "
          f"{med(all_in):.3f} s   total / training: {med(totals) / med(trainings):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "total_s": med(totals), "training_s": med(trainings), "start_up_s": med(fixed),
            "overhead_per_job_s": med(marginal), "all_in_per_job_s": med(all_in), "jobs": args.jobs,
            "pairs": [list(x) for x in zip(fixed, marginal, all_in, totals, trainings)], "machine": machine,
        }, indent=2))


if __name__ == "__main__":
    main()
