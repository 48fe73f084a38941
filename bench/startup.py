"""Start-up cost of the entry point: `--help` and `--cfg job` wall times.

Reference: a bare `python -c pass` and `python -c "import hydra"` measured in the same
run, so the printed ratios do not depend on the machine's speed. Run from the repo root:
    .venv/bin/python bench/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall(cmd: list[str], repeats: int) -> float:
    """Median wall time of `cmd` over `repeats` runs (after one warm-up)."""
    subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    py = sys.executable
    bare = wall([py, "-c", "pass"], args.repeats)
    hydra = wall([py, "-c", "import hydra"], args.repeats)
    rows = [
        ("python -c pass (reference)", bare),
        ("python -c 'import hydra' (reference)", hydra),
        ("python -m lab.run --help", wall([py, "-m", "lab.run", "--help"], args.repeats)),
        ("python -m lab.run --cfg job", wall([py, "-m", "lab.run", "--cfg", "job"], args.repeats)),
    ]
    print(f"{'command':<40} {'median s':>9} {'/ import hydra':>15}")
    for name, seconds in rows:
        print(f"{name:<40} {seconds:>9.3f} {seconds / hydra:>15.2f}")


if __name__ == "__main__":
    main()
