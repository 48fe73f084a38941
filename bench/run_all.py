"""`make bench`: run every benchmark, print each ratio, and rewrite docs/benchmarks.md.

Each script in bench/ times lab and a plain reference in the same run. This runs them one
after another (never in parallel: on a 2-core machine they would slow each other), takes
the summary lines each prints, and writes them, with the machine and the date, into
docs/benchmarks.md. Run it on an otherwise idle machine.
    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# name, what it measures, arguments (full, quick), the line patterns that carry its figures, target
BENCHES = [
    ("epoch_parity", "Epoch parity: Fashion-MNIST, cnn_fashionmnist, lab vs bare Lightning vs a hand-written loop",
     (["--epochs", "1", "--repeats", "3"], ["--quick"]),
     [r"^lab \d+:.*", r"^bare Lightning \d+:.*", r"^control \d+:.*", r"^train .* vs .*", r"^Fashion-MNIST, cnn.*",
      r"^per epoch \(median\):.*", r"^ratio +median.*", r"^lab / plain +\d.*", r"^bare Lightning / plain +\d.*",
      r"^lab / bare Lightning +\d.*", r"^control: plain / plain.*", r"^method's error:.*", r"^verdict:.*"],
     "lab within the control's error of bare Lightning; lab / plain <= 1.06"),
    ("sweep_overhead", "Sweep overhead: 8-job multirun of 1-epoch digits runs",
     (["--jobs", "8", "--repeats", "3"], ["--jobs", "8", "--repeats", "1"]),
     [r"^\d+-job multirun.*", r"^lab sweep total.*", r"^once per process.*", r"^overhead per job.*",
      r"^pair \d+:.*"], "<= 1 s per job"),
    ("startup", "Start-up: --help and --cfg job", ([], []), [r"^command.*", r"^python.*"],
     "--help < 1 s, --cfg job < 1.5 s"),
    ("data_pipeline", "Data pipeline: in-memory fast path vs torchvision-PIL DataLoader", ([], []),
     [r"^images:.*", r"^fast path.*", r"^torchvision-PIL.*", r"^ratio.*"], "fast / PIL >= 10x"),
    ("function_fitting", "Function fitting: experiment=mlp_function vs a plain loop",
     (["--repeats", "5"], ["--repeats", "2"]), [r"^lab +\(.*", r"^plain \(.*", r"^lab / plain:.*"],
     "lab / plain <= 1.2"),
    ("retrieval", "Retrieval search: 100,000 x 2,048 gallery, 1,000 queries, k = 10",
     (["--repeats", "5"], ["--repeats", "1"]),
     [r"^gallery.*", r"^lab +\(median\).*", r"^plain \(median\).*", r"^lab / plain.*", r"^quiet repeats.*",
      r"^no quiet repeat.*", r"^same neighbours.*"], ">= 200 queries/s"),
    ("gpu_throughput", "GPU path: Fashion-MNIST ResNet-18 training images/s, lab vs a plain loop", ([], []),
     [r"^skipped.*", r"^Fashion-MNIST ResNet.*", r"^lab +images/s.*", r"^plain images/s.*", r"^lab / plain.*"],
     "lab / plain <= 1.10 in time per image (needs a CUDA device)"),
]


def run(name: str, args: list[str]) -> tuple[int, str]:
    script = ROOT / "bench" / f"{name}.py"
    print(f"\n=== {name}: {sys.executable} bench/{script.name} {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout + (f"\n[exit {proc.returncode}] {proc.stderr[-1500:]}" if proc.returncode else "")
    return proc.returncode, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a rough look, not for the doc)")
    parser.add_argument("--only", nargs="*", help="run only these benchmarks (the doc keeps the others' text)")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    import torch

    machine = (f"{_cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
               f"Python {platform.python_version()}, torch {torch.__version__}, "
               f"CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    date = datetime.date.today().isoformat()
    sections, failed = [], []
    for name, title, (full, quick), patterns, target in BENCHES:
        if args.only and name not in args.only:
            continue
        code, out = run(name, quick if args.quick else full)
        lines = [ln for ln in out.splitlines() if any(re.match(p, ln.strip()) for p in patterns)]
        if code:
            failed.append(name)
            lines.append(out.strip().splitlines()[-1] if out.strip() else f"exit {code}")
        for ln in lines:
            if re.search(r"ratio|/ plain|per job|median|target|skipped|verdict|error|/ bare", ln):
                print(f"  {ln.strip()}")
        command = " ".join(["python", f"bench/{name}.py", *(quick if args.quick else full)])
        sections.append((name, title, command, target, lines))
    if not args.no_doc:
        write_doc(sections, machine, date, load, bool(args.quick))
        print(f"\nwrote {DOC.relative_to(ROOT)}")
    if failed:
        sys.exit(f"error: benchmarks failed: {', '.join(failed)}")


def write_doc(sections, machine: str, date: str, load: float, quick: bool) -> None:
    """Rewrite the generated part of docs/benchmarks.md; notes below the marker are kept, and so are
    sections of scripts outside BENCHES (the GPU check's)."""
    marker = "<!-- notes: kept by bench/run_all.py -->"
    old = DOC.read_text() if DOC.exists() else ""
    notes = old.split(marker, 1)[1] if marker in old else ""
    kept = {}
    for block in re.split(r"^## ", old.split(marker, 1)[0], flags=re.M)[1:]:
        key = re.search(r"`bench/(\w+)\.py", block)
        if key:
            kept[key.group(1)] = "## " + block.rstrip() + "\n"
    parts = ["# Benchmarks\n",
             "Generated by `make bench` (`bench/run_all.py`): each script times lab and a plain reference in the",
             "same run and prints the ratio. Do not edit above the notes marker; rerun `make bench`.\n",
             f"- Date: {date}" + (" (quick mode: fewer repeats)" if quick else ""),
             f"- Machine: {machine}", f"- Load average when started: {load:.2f}\n"]
    fresh = {name: rest for name, *rest in sections}
    for name, *_ in BENCHES:  # in the suite's order; one left out with --only keeps its previous section
        if name in fresh:
            title, command, target, lines = fresh[name]
            parts += [f"## {title}\n", f"`bench/{name}.py` — target: {target}\n", "```", f"$ {command}", *lines,
                      "```\n"]
        elif name in kept:
            parts.append(kept[name])
    # Sections other scripts write here (bench/gpu_check.py --doc, on a GPU machine) are kept as they are.
    names = {name for name, *_ in BENCHES}
    parts += [block for name, block in kept.items() if name not in names]
    text = "\n".join(parts).rstrip() + "\n\n" + marker + (notes if notes else "\n")
    tmp = tempfile.NamedTemporaryFile("w", dir=DOC.parent, delete=False, suffix=".tmp")
    with tmp:
        tmp.write(text)
    os.replace(tmp.name, DOC)


if __name__ == "__main__":
    main()
