"""Exact retrieval search speed: lab.retrieval.search against plain PyTorch, in one process.

A random gallery of unit vectors (default 100,000 x 2,048, float32, seed 0) and 1,000
random unit queries, k = 10, as `python -m lab.retrieve` searches an index:

- lab: lab.retrieval.search.search (query chunks x gallery chunks: one matmul and one
  top-k per chunk, merged at the end; default chunk sizes unless --query-chunk /
  --gallery-chunk);
- plain: the obvious PyTorch code, one `(q @ G.T).topk(k)` over the whole [Q, N] score
  matrix.

Repeats run as back-to-back pairs (after a warm-up pair, alternating which side goes
first); printed: queries/s per repeat, the medians, the median of the per-pair ratios,
and whether both return the same neighbours (they must: the search is exact). Other
processes on the 2 cores make the figures swing, so each repeat also prints the share of
the CPUs that other processes used meanwhile (from /proc/stat, minus this process's own
CPU time), and the medians are printed again over the quiet repeats (< 5% by default).
    .venv/bin/python bench/retrieval.py [--gallery 100000] [--dim 2048] [--queries 1000] [--k 10]
        [--repeats 5] [--threads N] [--ceiling] [--sweep]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _busy_seconds() -> float | None:
    """CPU seconds all processes have used so far (from /proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except OSError:
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--query-chunk", type=int, default=None)
    parser.add_argument("--gallery-chunk", type=int, default=None)
    parser.add_argument("--half", action="store_true", help="store the gallery in float16 (lab side only)")
    parser.add_argument("--sweep", action="store_true", help="also time lab over a grid of chunk sizes")
    parser.add_argument("--ceiling", action="store_true",
                        help="also time lab's matmuls alone (no top-k): the most any exact search can do here")
    parser.add_argument("--quiet", type=float, default=0.05,
                        help="a repeat is quiet when other processes used less than this share of the CPUs")
    args = parser.parse_args()

    import torch

    from lab.retrieval import search as S

    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    gallery = S.normalize(torch.randn(args.gallery, args.dim, generator=gen))
    queries = S.normalize(torch.randn(args.queries, args.dim, generator=gen))
    lab_gallery = gallery.half() if args.half else gallery
    chunks = {}
    if args.query_chunk:
        chunks["query_chunk"] = args.query_chunk
    if args.gallery_chunk:
        chunks["gallery_chunk"] = args.gallery_chunk

    def lab() -> torch.Tensor:
        return S.search(queries, lab_gallery, args.k, **chunks)[1]

    def plain() -> torch.Tensor:
        with torch.inference_mode():
            return (queries @ gallery.T).topk(args.k, dim=1).indices

    others: list[float] = []  # share of the machine other processes used during each timed call

    def matmuls() -> None:
        qc, gc = chunks.get("query_chunk", S.QUERY_CHUNK), chunks.get("gallery_chunk", S.GALLERY_CHUNK)
        out = torch.empty(min(qc, args.queries), min(gc, args.gallery))
        for q0 in range(0, args.queries, qc):
            q = queries[q0 : q0 + qc]
            for g0 in range(0, args.gallery, gc):
                g = gallery[g0 : g0 + gc]
                torch.mm(q, g.T, out=out[: len(q), : len(g)])

    def timed(fn) -> tuple[float, torch.Tensor]:
        busy, own = _busy_seconds(), sum(os.times()[:2])
        start = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - start
        if busy is not None:
            other = (_busy_seconds() - busy) - (sum(os.times()[:2]) - own)
            others.append(max(0.0, other) / (wall * (os.cpu_count() or 1)))
        return args.queries / wall, out

    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average before: {load()}")
    print(f"gallery {args.gallery:,} x {args.dim:,} {'float16' if args.half else 'float32'}, "
          f"{args.queries:,} queries, k = {args.k}, chunks: query {chunks.get('query_chunk', S.QUERY_CHUNK)} "
          f"x gallery {chunks.get('gallery_chunk', S.GALLERY_CHUNK)}")
    timed(lab), timed(plain)  # warm-up pair
    lab_qps, plain_qps, ratios, quiet, ceiling = [], [], [], [], []
    same = True
    for r in range(args.repeats):
        others.clear()
        if r % 2 == 0:
            a, lab_idx = timed(lab)
            b, plain_idx = timed(plain)
        else:
            b, plain_idx = timed(plain)
            a, lab_idx = timed(lab)
        same &= bool(torch.equal(lab_idx, plain_idx))
        lab_qps.append(a)
        plain_qps.append(b)
        ratios.append(a / b)
        if args.ceiling:
            ceiling.append(timed(matmuls)[0])
        busy = max(others) if others else float("nan")
        if busy < args.quiet:
            quiet.append(r)
        print(f"  repeat {r + 1}: lab {a:7.1f} q/s   plain {b:7.1f} q/s   ratio {a / b:.2f}   "
              f"other processes {100 * busy:4.0f}% of the CPUs")
    print(f"lab   (median): {statistics.median(lab_qps):7.1f} queries/s (target >= 200)")
    print(f"plain (median): {statistics.median(plain_qps):7.1f} queries/s")
    print(f"lab / plain (median of pairs): {statistics.median(ratios):.2f}")
    if ceiling:
        print(f"matmuls alone (median): {statistics.median(ceiling):7.1f} queries/s"
              + (f", quiet repeats {statistics.median(ceiling[r] for r in quiet):.1f}" if quiet else ""))
    if quiet:
        print(f"quiet repeats only (other processes < {100 * args.quiet:.0f}% of the CPUs: {len(quiet)} of "
              f"{args.repeats}): lab {statistics.median(lab_qps[r] for r in quiet):.1f} q/s, plain "
              f"{statistics.median(plain_qps[r] for r in quiet):.1f} q/s, ratio "
              f"{statistics.median(ratios[r] for r in quiet):.2f}")
    else:
        print(f"no quiet repeat (other processes always >= {100 * args.quiet:.0f}% of the CPUs): measure again")
    print(f"same neighbours as plain: {same}")
    if args.sweep:
        print("chunk sweep (lab, median of 3):")
        for qc in (256, 512, 1000):
            for gc in (2048, 4096, 8192, 32768, args.gallery):
                runs = []
                for _ in range(3):
                    start = time.perf_counter()
                    S.search(queries, lab_gallery, args.k, query_chunk=qc, gallery_chunk=gc)
                    runs.append(args.queries / (time.perf_counter() - start))
                print(f"  query chunk {qc:5d}  gallery chunk {gc:5d}: {statistics.median(runs):7.1f} q/s")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
