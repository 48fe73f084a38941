"""The subcommands of python -m lab.retrieve (lab.retrieval.cli): index, query and evaluate.

Heavy modules (torch, rich, the backbones) are imported inside each command, so that
`--help` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_index(args: argparse.Namespace) -> int:
    import time
    from datetime import datetime, timezone

    from rich.markup import escape

    from lab.errors import ConfigError
    from lab.retrieval.backbones import build_encoder
    from lab.retrieval.files import list_images
    from lab.retrieval.index import check_writable, save_index
    from lab.utils.console import console

    out = Path(args.out).expanduser().absolute()
    check_writable(out, args.force)
    if args.checkpoint and args.image_size:
        raise ConfigError("--image-size applies to torchvision backbones; a --checkpoint uses its run's image size")
    gallery = list_images(args.images)
    encoder = build_encoder(args.backbone, args.weights, args.checkpoint, args.image_size)
    start = time.perf_counter()
    features, kept = encoder.encode(gallery.paths(), args.batch_size, args.workers, args.skip_bad,
                                    description="encoding gallery")
    seconds = time.perf_counter() - start
    relative = [r for r, k in zip(gallery.relative, kept) if k]
    labels = [label for label, k in zip(gallery.labels, kept) if k]
    meta = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "root": str(gallery.root),
        "class_names": gallery.class_names,
        "backbone": encoder.backbone,
        "preprocess": encoder.preprocess.to_dict(),
        "image_size": list(encoder.preprocess.input_size),
        "distance": "L2 on L2-normalised features",
        "skipped": [r for r, k in zip(gallery.relative, kept) if not k],
        "paths": relative,
        "labels": labels,
    }
    save_index(out, features, meta, force=args.force)
    unlabelled = sum(label < 0 for label in labels)
    classes = f"{len(gallery.class_names)} classes" + (f", {unlabelled} unlabelled" if unlabelled else "")
    console.print(f"indexed {len(relative):,} images ({classes}) with {escape(_describe(encoder.backbone))} in "
                  f"{seconds:.1f} s: features {len(relative):,} x {features.shape[1]:,}",
                  highlight=False, soft_wrap=True)
    console.print(f"[bold]index:[/bold] {escape(str(out))}", highlight=False, soft_wrap=True)
    return 0


def _describe(backbone: dict[str, Any]) -> str:
    if backbone.get("kind") == "checkpoint":
        return f"{backbone.get('model', 'a lab model')} from {backbone.get('checkpoint')}"
    weights = backbone.get("weights_file") or backbone.get("weights")
    return f"{backbone.get('arch')} ({weights})"


def _encoder_for(index, args: argparse.Namespace):
    from lab.errors import ConfigError
    from lab.retrieval.backbones import encoder_from_index

    kind = index.meta["backbone"].get("kind")
    if args.weights and kind != "torchvision":
        raise ConfigError("--weights: this index was built from a lab --checkpoint; pass --checkpoint to move it")
    if args.checkpoint and kind != "checkpoint":
        raise ConfigError("--checkpoint: this index was built with a torchvision backbone; pass --weights to move it")
    return encoder_from_index(index.meta["backbone"], index.meta["preprocess"], args.weights, args.checkpoint)


def cmd_query(args: argparse.Namespace) -> int:
    import torch
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from lab.errors import DataNotFoundError
    from lab.retrieval.contact_sheet import Tile, write_contact_sheet
    from lab.retrieval.index import load_index
    from lab.retrieval.search import search
    from lab.utils.console import console

    index = load_index(args.index)
    queries = [Path(p).expanduser() for p in args.images]
    for q in queries:
        if not q.is_file():
            raise DataNotFoundError(f"{q}: query image does not exist")
    encoder = _encoder_for(index, args)
    features, _ = encoder.encode(queries, args.batch_size, show_progress=len(queries) > 8,
                                 description="encoding queries")
    k = min(args.k, len(index.relative))
    distances, indices = search(torch.from_numpy(features), index.tensor(), k)
    gallery_paths = index.paths()
    names = index.class_names
    sheets = _sheet_paths(Path(index.path), queries, args.out_png)
    for qi, query in enumerate(queries):
        query_label = _label_in_gallery(query, index)
        suffix = f" ({escape(query_label)})" if query_label else ""
        console.print(f"[bold]query:[/bold] {escape(str(query))}{suffix}", highlight=False, soft_wrap=True)
        table = Table(header_style="bold")
        table.add_column("rank", justify="right")
        table.add_column("distance", justify="right")
        table.add_column("path")
        table.add_column("label")
        tiles = [Tile(query, "query", query_label, "query")]
        resolved = query.resolve()
        for rank, (d, g) in enumerate(zip(distances[qi].tolist(), indices[qi].tolist()), start=1):
            label = names[index.labels[g]] if index.labels[g] >= 0 else None
            itself = gallery_paths[g].resolve() == resolved
            table.add_row(f"{rank}*" if itself else str(rank), f"{d:.4f}", Text(index.relative[g]), Text(label or "-"))
            if itself:
                table.caption, table.caption_justify = "* the query image itself", "left"
            frame = "none" if label is None or query_label is None else ("same" if label == query_label else "other")
            tiles.append(Tile(gallery_paths[g], f"#{rank}  d={d:.3f}", label, frame, index.relative[g]))
        console.print(table)
        sheet = write_contact_sheet(tiles, sheets[qi])
        console.print(f"[bold]contact sheet:[/bold] {escape(str(sheet))}", highlight=False, soft_wrap=True)
    return 0


def _label_in_gallery(path: Path, index) -> str | None:
    """The query's class when it lies under the gallery root in a class folder."""
    try:
        parts = path.resolve().relative_to(index.root).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 and parts[0] in index.class_names else None


def _sheet_paths(index_path: Path, queries: list[Path], out_png: str | None) -> list[Path]:
    """One PNG per query: --out-png for one query, else `<stem>-<query name>.png` (numbered on clashes)."""
    if out_png and len(queries) == 1:
        return [Path(out_png).expanduser()]
    base = Path(out_png).expanduser() if out_png else index_path.absolute()
    parent, stem = base.parent, (base.stem if out_png else base.name)
    paths: list[Path] = []
    for q in queries:
        candidate = parent / f"{stem}-{q.stem}.png"
        n = 2
        while candidate in paths:
            candidate = parent / f"{stem}-{q.stem}-{n}.png"
            n += 1
        paths.append(candidate)
    return paths


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from rich.markup import escape
    from rich.table import Table

    from lab.errors import ConfigError
    from lab.retrieval.files import list_images
    from lab.retrieval.index import load_index
    from lab.retrieval.scoring import KS, metrics_excluding_self
    from lab.utils.console import console

    index = load_index(args.index)
    if not any(label >= 0 for label in index.labels):
        raise ConfigError(f"{index.path}: the gallery has no labels (its images sit directly in {index.root}); "
                          "evaluate needs <gallery>/<class>/<image>")
    queries = list_images(args.queries)
    if queries.labelled == 0:
        raise ConfigError(f"{queries.root}: the queries have no labels; evaluate needs <queries>/<class>/<image>")
    notes: list[str] = []
    unlabelled = len(queries.relative) - queries.labelled
    if unlabelled:
        notes.append(f"{unlabelled} query image(s) directly in {queries.root} have no label and are left out")
    # Label ids: the gallery's classes, then query classes the gallery lacks (R = 0: left out of the
    # metrics), then one id for unlabelled gallery images (relevant to no query).
    names = list(index.class_names)
    query_names = [queries.class_names[label] for label in queries.labels if label >= 0]
    absent = sorted(set(query_names) - set(names))
    if len(absent) == len(set(query_names)):
        raise ConfigError(f"none of the query classes ({', '.join(sorted(set(query_names))[:5])}) is a gallery class "
                          f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    ids = {name: i for i, name in enumerate(names + absent)}
    if absent:
        count = sum(name in absent for name in query_names)
        notes.append(f"{count} query image(s) of {len(absent)} class(es) not in the gallery ({', '.join(absent[:3])}"
                     f"{', ...' if len(absent) > 3 else ''}) have no relevant result and are left out")
    gallery_labels = torch.tensor([label if label >= 0 else len(ids) for label in index.labels])
    query_files = [p for p, label in zip(queries.paths(), queries.labels) if label >= 0]
    query_labels = torch.tensor([ids[name] for name in query_names])

    # A query file that is also in the gallery uses its indexed features and is left out of its own results.
    where = {str(p.resolve()): i for i, p in enumerate(index.paths())}
    in_gallery = np.array([where.get(str(p.resolve()), -1) for p in query_files])
    overlap = int((in_gallery >= 0).sum())
    features = np.zeros((len(query_files), index.features.shape[1]), dtype=np.float32)
    if overlap:
        features[in_gallery >= 0] = index.features[in_gallery[in_gallery >= 0]]
        notes.append(f"{overlap} of {len(query_files)} query image(s) are in the gallery: each is left out of its "
                     "own results")
    todo = np.flatnonzero(in_gallery < 0)
    if len(todo):
        encoder = _encoder_for(index, args)
        encoded, kept = encoder.encode([query_files[i] for i in todo], args.batch_size, args.workers, args.skip_bad,
                                       description="encoding queries")
        features[todo[kept]] = encoded
        if not kept.all():
            keep = np.ones(len(query_files), dtype=bool)
            keep[todo[~kept]] = False
            features, in_gallery = features[keep], in_gallery[keep]
            query_labels = query_labels[torch.from_numpy(keep)]
    metrics, counted = metrics_excluding_self(torch.from_numpy(features), query_labels, index.tensor(),
                                              gallery_labels, torch.from_numpy(in_gallery))
    for note in notes:
        console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    console.print(f"[bold]retrieval:[/bold] {len(query_labels):,} queries, gallery of {len(gallery_labels):,} "
                  f"({escape(str(index.path))})", highlight=False, soft_wrap=True)
    table = Table(header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, title in [*((f"recall_at_{k}", f"Recall@{k}") for k in KS), ("precision_at_1", "precision@1"),
                       ("map_at_r", "MAP@R")]:
        table.add_row(title, f"{metrics[key]:.4f}")
    console.print(table)
    console.print(f"{counted:,} queries counted (with at least one relevant gallery image)", highlight=False)
    if args.json:
        from lab.utils.io import write_json

        write_json(args.json, {**metrics, "queries": len(query_labels), "queries_counted": counted,
                               "queries_in_gallery": overlap, "gallery": len(gallery_labels),
                               "index": str(Path(index.path).absolute()), "queries_folder": str(queries.root)})
        console.print(f"[bold]metrics:[/bold] {escape(args.json)}", highlight=False, soft_wrap=True)
    return 0
