"""Exact k-nearest-neighbour search on L2-normalised features, batched for the CPU.

On unit vectors ||q - g||^2 = 2 - 2 q.g, so ranking by L2 distance is ranking by the dot
product: one matmul per (query chunk, gallery chunk) and a top-k per chunk, merged at the
end. Chunking keeps memory bounded (no [Q, N] score matrix) and the gallery chunk in cache
while the matmul runs; nothing is approximate, so the results are brute force's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Chosen by bench/retrieval.py on the 2-core machine (docs/benchmarks.md, "Retrieval search").
QUERY_CHUNK = 1024
GALLERY_CHUNK = 4096


def normalize(features: torch.Tensor) -> torch.Tensor:
    """Unit-length rows in float32 (zero rows stay zero)."""
    import torch

    return torch.nn.functional.normalize(features.float(), dim=1)


def l2_from_similarity(scores: torch.Tensor) -> torch.Tensor:
    """L2 distance between unit vectors from their dot product: sqrt(2 - 2 s), clamped at 0."""
    return (2.0 - 2.0 * scores).clamp_min_(0.0).sqrt_()


def search(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
    *,
    query_chunk: int = QUERY_CHUNK,
    gallery_chunk: int = GALLERY_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest gallery rows of each query: (L2 distances [Q, k], indices [Q, k]), nearest first.

    Both inputs must already be L2-normalised. `exclude[i]` (a gallery index, or -1) is
    left out of query i's results: a query that is itself in the gallery. A float16
    gallery is computed on in float32, one chunk at a time.
    """
    import torch

    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and gallery {tuple(gallery.shape)} must be [*, D] alike")
    n = gallery.shape[0]
    k = min(int(k), n - (1 if exclude is not None and bool((exclude >= 0).any()) else 0))
    q_total = queries.shape[0]
    if k <= 0 or q_total == 0:
        return torch.zeros(q_total, max(k, 0)), torch.zeros(q_total, max(k, 0), dtype=torch.long)
    queries = queries.float()
    scores_out = torch.empty(q_total, k)
    index_out = torch.empty(q_total, k, dtype=torch.long)
    buffer = torch.empty(min(query_chunk, q_total), min(gallery_chunk, n))
    with torch.inference_mode():
        for q0 in range(0, q_total, query_chunk):
            q = queries[q0 : q0 + query_chunk]
            rows = torch.arange(len(q))
            skip = exclude[q0 : q0 + query_chunk] if exclude is not None else None
            part_scores, part_index = [], []
            for g0 in range(0, n, gallery_chunk):
                g = gallery[g0 : g0 + gallery_chunk]
                if g.dtype != torch.float32:
                    g = g.float()
                scores = torch.mm(q, g.T, out=buffer[: len(q), : len(g)])
                if skip is not None:
                    hit = (skip >= g0) & (skip < g0 + len(g))
                    scores[rows[hit], skip[hit] - g0] = float("-inf")
                top = scores.topk(min(k, len(g)), dim=1)
                part_scores.append(top.values)
                part_index.append(top.indices + g0)
            if len(part_scores) == 1:
                best, best_index = part_scores[0], part_index[0]
            else:
                merged = torch.cat(part_scores, dim=1).topk(k, dim=1)
                best, best_index = merged.values, torch.cat(part_index, dim=1).gather(1, merged.indices)
            scores_out[q0 : q0 + len(q)] = best
            index_out[q0 : q0 + len(q)] = best_index
    return l2_from_similarity(scores_out), index_out
