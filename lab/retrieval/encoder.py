"""An Encoder: a model in eval mode that turns image files into L2-normalised feature vectors."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lab.data.images import BadImageError
from lab.retrieval.preprocess import Preprocess

if TYPE_CHECKING:
    import torch


class Encoder:
    """A model in eval mode, its preprocessing and a description to store in the index."""

    def __init__(self, model: torch.nn.Module, embed: Callable, preprocess: Preprocess,
                 backbone: dict[str, Any]) -> None:
        self.model = model.eval()
        self.embed = embed
        self.preprocess = preprocess
        self.backbone = backbone

    def encode(self, paths: Sequence[Path], batch_size: int = 32, workers: int = 0, skip_bad: bool = False,
               description: str = "encoding", show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(float32 unit-length features [kept, D], kept mask [len(paths)]), with a progress bar.

        A file that cannot be decoded stops with one line naming it, or with `skip_bad` is
        left out (the mask says which) and counted in a warning."""
        import torch
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from lab.retrieval.search import normalize
        from lab.utils.console import console

        dataset = _Files(list(paths), self.preprocess)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                             collate_fn=_collate, persistent_workers=False)
        transform = self.preprocess.batch_transform()
        chunks: list[torch.Tensor] = []
        kept = np.ones(len(dataset), dtype=bool)
        bad: list[tuple[Path, str]] = []
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]} img/s"), TimeElapsedColumn(), TextColumn("eta"),
                   TimeRemainingColumn())
        start = 0
        progress_bar = Progress(*columns, console=console, transient=False, disable=not show_progress)
        with progress_bar as progress, torch.inference_mode():
            task = progress.add_task(description, total=len(dataset), rate="-")
            try:
                for images, errors in loader:
                    ok = [e is None for e in errors]
                    for offset, error in enumerate(errors):
                        if error is not None:
                            path = dataset.paths[start + offset]
                            if not skip_bad:
                                raise BadImageError(f"{path}: cannot decode image ({error}); fix or remove it, "
                                                    "or pass --skip-bad to leave unreadable files out")
                            bad.append((path, error))
                            kept[start + offset] = False
                    if any(ok):
                        x = transform(images[torch.tensor(ok)])
                        chunks.append(normalize(self.embed(x)))
                    start += len(errors)
                    elapsed = progress.tasks[0].elapsed or 0.0
                    progress.update(task, advance=len(errors), rate=f"{start / elapsed:.1f}" if elapsed else "-")
            except BaseException:  # the error is one line: leave no half-done bar above it
                progress.live.transient = True
                raise
        if bad:
            console.print(f"[yellow]warning:[/yellow] skipped {len(bad)} unreadable image(s) (--skip-bad), "
                          f"first: {escape(str(bad[0][0]))} ({escape(bad[0][1])})", highlight=False, soft_wrap=True)
        if not chunks:
            raise BadImageError(f"none of the {len(dataset)} image(s) could be decoded")
        return torch.cat(chunks).numpy().astype(np.float32, copy=False), kept


class _Files:
    """DataLoader dataset over image files: (uint8 [C, H, W], None) or (zeros, error text)."""

    def __init__(self, paths: list[Path], preprocess: Preprocess) -> None:
        self.paths = paths
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image, UnidentifiedImageError

        try:
            return self.preprocess.load(self.paths[i]), None
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            h, w = self.preprocess.crop or self.preprocess.size or (1, 1)
            channels = 1 if self.preprocess.mode == "L" else 3
            return np.zeros((channels, int(h), int(w)), dtype=np.uint8), f"{type(err).__name__}: {err}".splitlines()[0]


def _collate(items):
    import torch

    images = torch.from_numpy(np.stack([item[0] for item in items]))
    return images, [item[1] for item in items]


def file_sha256(path: str | os.PathLike) -> str:
    """The fingerprint recorded for a backbone's weights file: other weights at a moved path give a warning."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
