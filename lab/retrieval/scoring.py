"""Retrieval metrics of queries against an index, each query's own gallery entry left out."""

from __future__ import annotations

KS = (1, 5, 10)


def metrics_excluding_self(queries, query_labels, gallery, gallery_labels, in_gallery) -> tuple[dict[str, float], int]:
    """lab.metrics.retrieval's metrics with each query's own gallery entry (in_gallery[i], or -1) left out.

    retrieval_metrics leaves a query out of its own results only when the queries are the
    references. So: queries outside the gallery are scored in one call; queries inside it
    in one leave-one-out call over the whole gallery when that is exact and cheap (every
    other gallery image gets a label of its own, so it is scored as no query and relevant
    to none; exact when no such image shares a class with an inside query), else one
    call per query against the gallery without it. The parts are combined as the mean
    over the queries counted (those with at least one relevant gallery image)."""
    import torch

    from lab.metrics.retrieval import retrieval_metrics
    from lab.utils.console import console

    def counted_of(labels: torch.Tensor, ref_labels: torch.Tensor, minus_self: bool) -> int:
        r = (labels[:, None] == ref_labels[None, :]).sum(1) - int(minus_self)
        return int((r > 0).sum())

    def score(q, ql, refs=None, rl=None) -> dict[str, float]:
        return retrieval_metrics(q, ql, refs, rl, ks=KS, distance="cosine")

    parts: list[tuple[dict[str, float], int]] = []
    inside = in_gallery >= 0
    if bool((~inside).any()):
        ql = query_labels[~inside]
        parts.append((score(queries[~inside], ql, gallery, gallery_labels), counted_of(ql, gallery_labels, False)))
    if bool(inside.any()):
        rows, ql = in_gallery[inside], query_labels[inside]
        others = torch.ones(len(gallery), dtype=torch.bool)
        others[rows] = False
        exact = bool((gallery_labels[rows] == ql).all()) and not bool(torch.isin(gallery_labels[others], ql).any())
        if exact and len(rows) * 4 >= len(gallery):
            labels = gallery_labels.clone()
            labels[others] = int(labels.max()) + 1 + torch.arange(int(others.sum()))
            parts.append((score(gallery, labels), counted_of(ql, gallery_labels, True)))
        else:
            if len(rows) > 200:
                console.print(f"note: scoring {len(rows):,} in-gallery queries one at a time (lab.metrics.retrieval "
                              "leaves a query's own entry out only when the queries are the gallery)", highlight=False)
            inside_queries = queries[inside]
            for i, g in enumerate(rows.tolist()):
                keep = torch.ones(len(gallery), dtype=torch.bool)
                keep[g] = False
                c = counted_of(ql[i : i + 1], gallery_labels[keep], False)
                if c:
                    parts.append((score(inside_queries[i : i + 1], ql[i : i + 1], gallery[keep],
                                        gallery_labels[keep]), c))
    total = sum(c for _, c in parts)
    keys = ["precision_at_1", *(f"recall_at_{k}" for k in KS), "map_at_r"]
    return {key: sum(m[key] * c for m, c in parts if c) / max(total, 1) for key in keys}, total
