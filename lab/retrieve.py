"""Image retrieval on a folder of images: index a gallery, query it, evaluate it.

    python -m lab.retrieve index --images <folder> --out <index>
    python -m lab.retrieve query --index <index> <image> [-k 5]
    python -m lab.retrieve evaluate --index <index> --queries <folder>

Features come from a backbone (torchvision ResNet-50 with ImageNet weights by default,
a local state dict with --weights, or a lab run's model with --checkpoint), are
L2-normalised, and are searched exactly by L2 distance (the same ranking as cosine).
Labels are the gallery's class sub-folders (<folder>/<class>/<image>). User errors print
one line, `error: ...`, and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

PROG = "python -m lab.retrieve"
KS = (1, 5, 10)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `error:` line (and status 2) like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        from lab.utils.console import print_error

        print_error(f"{message} (see {self.prog} --help)")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from lab.retrieval.encoder import BACKBONES, DEFAULT_BACKBONE

    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 2)[2],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{index,query,evaluate}", parser_class=_Parser)
    sub.required = True

    def encoding(p: argparse.ArgumentParser) -> None:
        p.add_argument("--batch-size", type=_positive, default=32, metavar="N", help="images per forward pass (32)")
        p.add_argument("--workers", type=_non_negative, default=0, metavar="N",
                       help="DataLoader worker processes decoding images (0: in this process)")
        p.add_argument("--skip-bad", action="store_true",
                       help="leave unreadable image files out with a warning (default: stop, naming the file)")

    def moved(p: argparse.ArgumentParser) -> None:
        p.add_argument("--weights", metavar="FILE",
                       help="where the index's --weights file is now (default: the path recorded in the index)")
        p.add_argument("--checkpoint", metavar="CKPT",
                       help="where the index's --checkpoint is now (default: the path recorded in the index)")

    p = sub.add_parser("index", help="encode a gallery folder into an index", formatter_class=_Help,
                       description="Encode every image under --images (recursively) and save the features, "
                       "paths and labels (<folder>/<class>/<image>; images directly in <folder> have none) in "
                       "the --out folder: features.npy + index.json, loaded without pickle.")
    p.add_argument("--images", required=True, metavar="FOLDER", help="gallery folder")
    p.add_argument("--out", required=True, metavar="INDEX", help="index folder to create")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=BACKBONES,
                   help="torchvision backbone; ImageNet weights (IMAGENET1K_V1) from $TORCH_HOME/hub/checkpoints "
                   "unless --weights")
    p.add_argument("--weights", metavar="FILE", help="a local state dict for --backbone instead of ImageNet's")
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="a lab run's checkpoint (<run>/checkpoints/*.ckpt): its model's features() and its data's "
                   "preprocessing")
    p.add_argument("--image-size", type=_image_size, default=None, metavar="PX",
                   help="torchvision backbones: centre-crop size after resizing the shorter side to 256/224 of "
                   "it (224); smaller is faster")
    encoding(p)
    p.add_argument("--force", action="store_true", help="replace an existing index at --out")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("query", help="top-k gallery images of query images (table + PNG contact sheet)",
                       formatter_class=_Help,
                       description="Print the k nearest gallery images of each query image (rank, L2 distance on "
                       "normalised features, path, label) and write a contact sheet PNG: the query, then its results.")
    p.add_argument("--index", required=True, metavar="INDEX", help="index folder made by `index`")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="query image file(s)")
    p.add_argument("-k", type=_positive, default=5, help="results per query (5)")
    p.add_argument("--out-png", metavar="PNG", help="contact sheet path (default: <index>-<image name>.png beside "
                   "the index; with several images, <PNG stem>-<image name>.png)")
    moved(p)
    p.add_argument("--batch-size", type=_positive, default=32, metavar="N", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_query, workers=0, skip_bad=False)

    p = sub.add_parser("evaluate", help="Recall@1/5/10, precision@1 and MAP@R of a labelled query folder",
                       formatter_class=_Help,
                       description="Search the index with every image of --queries (labelled by its class "
                       "sub-folder, matched to the gallery's by name) and print Recall@1/5/10, precision@1 and "
                       "MAP@R (lab.metrics.retrieval). A query file that is also in the gallery is left out of "
                       "its own results; its indexed features are used.")
    p.add_argument("--index", required=True, metavar="INDEX", help="index folder made by `index`")
    p.add_argument("--queries", required=True, metavar="FOLDER", help="query folder: <folder>/<class>/<image>")
    p.add_argument("--json", metavar="FILE", help="also write the metrics to this JSON file")
    encoding(p)
    moved(p)
    p.set_defaults(func=cmd_evaluate)
    return parser


class _Help(argparse.HelpFormatter):
    pass


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _image_size(text: str) -> int:
    value = int(text)
    if value < 16:
        raise argparse.ArgumentTypeError(f"must be at least 16 pixels, got {text}")
    return value


# -------------------------------------------------------------------------------------------------
# index
# -------------------------------------------------------------------------------------------------


def cmd_index(args: argparse.Namespace) -> int:
    import time
    from datetime import datetime, timezone

    from rich.markup import escape

    from lab.errors import ConfigError
    from lab.retrieval.encoder import build_encoder
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
    from lab.retrieval.encoder import encoder_from_index

    kind = index.meta["backbone"].get("kind")
    if args.weights and kind != "torchvision":
        raise ConfigError("--weights: this index was built from a lab --checkpoint; pass --checkpoint to move it")
    if args.checkpoint and kind != "checkpoint":
        raise ConfigError("--checkpoint: this index was built with a torchvision backbone; pass --weights to move it")
    return encoder_from_index(index.meta["backbone"], index.meta["preprocess"], args.weights, args.checkpoint)


# -------------------------------------------------------------------------------------------------
# query
# -------------------------------------------------------------------------------------------------


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


# -------------------------------------------------------------------------------------------------
# evaluate
# -------------------------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from rich.markup import escape
    from rich.table import Table

    from lab.errors import ConfigError
    from lab.retrieval.files import list_images
    from lab.retrieval.index import load_index
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
    metrics, counted = _metrics(torch.from_numpy(features), query_labels, index.tensor(), gallery_labels,
                                torch.from_numpy(in_gallery))
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


def _metrics(queries, query_labels, gallery, gallery_labels, in_gallery) -> tuple[dict[str, float], int]:
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


# -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; user errors are one `error:` line and status 2."""
    args = build_parser().parse_args(argv)
    from lab.errors import LabError
    from lab.utils.console import print_error

    try:
        return args.func(args)
    except LabError as err:
        print_error(str(err))
        return 2
    except OSError as err:  # e.g. an output folder that cannot be written
        print_error(f"{err.filename or ''}: {err.strerror or err}".lstrip(": "))
        return 2
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130


if __name__ == "__main__":
    from lab.utils.shutdown import skip_final_collection

    skip_final_collection()
    sys.exit(main())
