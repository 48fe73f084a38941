"""A PNG contact sheet of one query: the query image, then its top-k results with distances.

One row of square tiles (the image letterboxed in the tile) with a caption under each:
rank, L2 distance, label and file name. The query is framed blue; a result with the
query's label green, another label red, an unlabelled one grey.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

TILE = 160
PAD = 8
CAPTION = 46
COLOURS = {"query": (40, 110, 220), "same": (40, 170, 70), "other": (210, 60, 50), "none": (150, 150, 150)}


@dataclass
class Tile:
    path: Path
    title: str  # "query" or "#1  d=0.123"
    label: str | None
    frame: str  # a COLOURS key
    name: str | None = None  # shown under the label (default: the file name)


def _fit(text: str, font, width: int, draw) -> str:
    """`text`, cut with an ellipsis at the front so that its end (the file name) fits `width`."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("..." + text, font=font) > width:
        text = text[1:]
    return "..." + text


def _thumbnail(path: Path, size: int):
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size), Image.BILINEAR)
            if max(img.size) < size:  # small images (32 px) are scaled up to be visible
                scale = size / max(img.size)
                img = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))),
                                 Image.NEAREST)
            return img
    except (OSError, ValueError, SyntaxError):
        return None


def write_contact_sheet(tiles: list[Tile], out: str | os.PathLike, tile: int = TILE) -> Path:
    """Render `tiles` in one row and write the PNG atomically; returns its path."""
    from PIL import Image, ImageDraw, ImageFont

    out = Path(out)
    font = ImageFont.load_default()
    width = PAD + len(tiles) * (tile + PAD)
    height = PAD + tile + CAPTION + PAD
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, item in enumerate(tiles):
        x0, y0 = PAD + i * (tile + PAD), PAD
        colour = COLOURS.get(item.frame, COLOURS["none"])
        draw.rectangle((x0 - 3, y0 - 3, x0 + tile + 2, y0 + tile + 2), outline=colour, width=3)
        draw.rectangle((x0, y0, x0 + tile - 1, y0 + tile - 1), fill=(235, 235, 235))
        thumb = _thumbnail(item.path, tile)
        if thumb is None:
            draw.text((x0 + 6, y0 + tile // 2 - 6), "(unreadable)", fill=(120, 120, 120), font=font)
        else:
            sheet.paste(thumb, (x0 + (tile - thumb.size[0]) // 2, y0 + (tile - thumb.size[1]) // 2))
        lines = [item.title, item.label if item.label is not None else "(no label)", item.name or item.path.name]
        for j, line in enumerate(lines):
            draw.text((x0, y0 + tile + 4 + 13 * j), _fit(line, font, tile, draw), fill=(20, 20, 20) if j != 1
                      else colour, font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp.png")
    os.close(fd)
    try:
        sheet.save(tmp, format="PNG")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
