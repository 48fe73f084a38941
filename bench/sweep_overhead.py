"""Sweep overhead: what an 8-job multirun costs beyond its jobs' training.

`python -m lab.run -m data=digits trainer.max_epochs=1 seed=0,...,7` in a subprocess, the
way a user types it (the basic launcher: all jobs in one process). Each job's own
training part is its `wall_time_s` in metrics.json (trainer.fit plus the test of the best
checkpoint). The overhead is everything else: interpreter start, imports, Hydra's
composition of each job, building data/model/Trainer, writing configs, TensorBoard files
and the HParams entry, printing. Target: <= 1 s per job (imports and data loading paid
once per process, not per job).
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
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this JSON file (make bench)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        for rep in range(args.repeats):
            total, trained, parts = one_sweep(args.jobs, args.overrides, Path(tmp) / f"sweep{rep}")
            per_job = (total - trained) / args.jobs
            results.append((total, trained, per_job))
            print(f"sweep {rep + 1}: {args.jobs} jobs in {total:.2f} s; training parts {trained:.2f} s "
                  f"(per job {min(parts):.2f}-{max(parts):.2f} s); overhead {per_job:.3f} s per job; "
                  f"total / training {total / trained:.2f}")
    total, trained, per_job = (statistics.median(x) for x in zip(*results))
    machine = f"{os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}"
    print(f"\n{args.jobs}-job multirun of 1-epoch digits runs, {args.repeats} sweeps; {machine}")
    print(f"lab sweep total: {total:.2f} s   sum of the jobs' training parts (reference): {trained:.2f} s")
    print(f"overhead per job: {per_job:.3f} s (median; target <= 1 s)   total / training: {total / trained:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"total_s": total, "training_s": trained, "overhead_per_job_s": per_job,
                                               "jobs": args.jobs, "runs": results, "machine": machine}, indent=2))


if __name__ == "__main__":
    main()
