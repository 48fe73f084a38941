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

from lab.retrieval.commands import cmd_evaluate, cmd_index, cmd_query

PROG = "python -m lab.retrieve"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `error:` line (and status 2) like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        from lab.utils.console import print_error

        print_error(f"{message} (see {self.prog} --help)")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from lab.retrieval.backbones import BACKBONES, DEFAULT_BACKBONE

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
