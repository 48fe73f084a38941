"""PNG bytes for pictures logged while training: the run folder's file, and TensorBoard's image.

Encoded at zlib level 1 (a third of the default's time); TensorBoard gets the same picture
through SummaryWriter's public add_image.
"""

from __future__ import annotations

import io
from typing import Any


def encode_png(image: Any, colors: int | None = None) -> bytes:
    """PNG bytes of an RGB uint8 array (H, W, 3) at zlib level 1: lossless, or with a `colors`
    palette (no dithering) for plots of a few flat colours, which then encode in a third of the time."""
    from PIL import Image

    pil = Image.fromarray(image)
    if colors is not None:
        pil = pil.quantize(colors=colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def add_png(writer: Any, tag: str, png: bytes, height: int, width: int, step: int) -> None:
    """Logs encoded PNG bytes as TensorBoard image `tag` at `step` through a SummaryWriter's public
    add_image (which encodes again: a few ms, once per validation epoch)."""
    import numpy as np
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    if image.shape[:2] != (height, width):
        raise ValueError(f"{tag}: the PNG is {image.shape[1]}x{image.shape[0]}, not {width}x{height}")
    writer.add_image(tag, image, step, dataformats="HWC")
