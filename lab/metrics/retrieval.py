"""Retrieval metrics on embeddings: precision@1, Recall@K (hit rate) and MAP@R.

One distance is used everywhere (the triplet loss, these metrics and lab.retrieve):
`cosine` ranks by cosine similarity, `euclidean` by L2 distance; on L2-normalised
features the two give the same ranking. Definitions follow Musgrave et al., "A Metric
Learning Reality Check" (2020):

- precision@1: fraction of queries whose nearest reference has the query's label;
- Recall@K: fraction of queries with at least one same-label reference in the top K;
- MAP@R: with R the number of references sharing the query's label, the mean over
  queries of (1/R) * sum_{i<=R} precision@i * [i-th neighbour is relevant].

When queries are the references themselves (`exclude_self=True`), each query's own
entry is never counted as a neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

DISTANCES = ("cosine", "euclidean")


def check_distance(distance: str) -> str:
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    return distance


def similarity(queries: torch.Tensor, refs: torch.Tensor, distance: str) -> torch.Tensor:
    """A [Q, N] score where larger means closer: cosine similarity, or minus the L2 distance."""
    check_distance(distance)
    if distance == "cosine":
        q = torch.nn.functional.normalize(queries, dim=1)
        r = torch.nn.functional.normalize(refs, dim=1)
        return q @ r.T
    return -torch.cdist(queries, refs)


@torch.no_grad()
def retrieval_metrics(
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    refs: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10),
    distance: str = "cosine",
    chunk: int = 1024,
) -> dict[str, float]:
    """{"precision_at_1", "recall_at_<k>" for k in ks, "map_at_r"} as floats in [0, 1].

    Without `refs` the queries are searched among themselves, leaving each one out.
    Queries whose label has no reference (R = 0) are left out of MAP@R and of the
    recalls, as in the reference definitions."""
    exclude_self = refs is None
    if exclude_self:
        refs, ref_labels = queries, query_labels
    queries, refs = queries.float(), refs.float()
    query_labels, ref_labels = query_labels.long().cpu(), ref_labels.long().cpu()
    if len(queries) != len(query_labels) or len(refs) != len(ref_labels):
        raise ValueError("features and labels must have the same length")
    num_classes = int(max(query_labels.max(), ref_labels.max())) + 1
    ref_counts = torch.bincount(ref_labels, minlength=num_classes)
    relevant_total = ref_counts[query_labels] - (1 if exclude_self else 0)  # R per query
    k_max = min(max(max(ks), int(relevant_total.max().clamp_min(1))), len(refs) - (1 if exclude_self else 0))
    if k_max <= 0:
        raise ValueError("retrieval metrics need at least two reference items")

    hits_at = {k: 0.0 for k in ks}
    p1 = ap_sum = 0.0
    counted = 0
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        scores = similarity(q, refs, distance)
        if exclude_self:
            rows = torch.arange(len(q), device=scores.device)
            scores[rows, rows + start] = float("-inf")
        top = scores.topk(k_max, dim=1).indices.cpu()
        labels = query_labels[start : start + chunk]
        relevant = ref_labels[top] == labels[:, None]  # [q, k_max]
        r = relevant_total[start : start + chunk]
        valid = r > 0
        counted += int(valid.sum())
        p1 += float(relevant[:, 0][valid].float().sum())
        for k in ks:
            hits_at[k] += float(relevant[:, :k].any(dim=1)[valid].float().sum())
        # MAP@R: precision at each relevant rank within the first R results.
        ranks = torch.arange(1, k_max + 1)
        within_r = ranks[None, :] <= r[:, None]
        rel = (relevant & within_r).float()
        precision_at_i = rel.cumsum(dim=1) / ranks[None, :]
        ap = (precision_at_i * rel).sum(dim=1) / r.clamp_min(1)
        ap_sum += float(ap[valid].sum())
    counted = max(counted, 1)
    out = {"precision_at_1": p1 / counted}
    out.update({f"recall_at_{k}": hits_at[k] / counted for k in ks})
    out["map_at_r"] = ap_sum / counted
    return out
