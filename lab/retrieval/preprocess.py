"""How an image file becomes a model's input, recorded in the index so queries are decoded like the gallery."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lab.data.imagenet_stats import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class Preprocess:
    """How one file becomes the model's input; stored in the index as a dict.

    Per file (PIL): convert to `mode`; then either shorter side to `resize_short` and a
    centre crop to `crop` (torchvision), or a plain resize to `size` (lab's decoders).
    Per batch (lab.data.augment.BatchTransform, as lab's eval batches): normalise with
    mean/std, resize to `model_resize`, grey to RGB with `to_rgb`.
    """

    mode: str = "RGB"
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    resize_short: int | None = None
    crop: list[int] | None = None
    size: list[int] | None = None
    model_resize: list[int] | None = None
    to_rgb: bool = False

    @classmethod
    def imagenet(cls, image_size: int = 224) -> Preprocess:
        return cls(resize_short=round(image_size * 256 / 224), crop=[image_size, image_size])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def input_size(self) -> tuple[int, int]:
        size = self.model_resize or self.crop or self.size
        return int(size[0]), int(size[1])

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """uint8 [C, H, W] of one file; raises what PIL raises on a bad file."""
        from PIL import Image

        with Image.open(path) as img:
            img = img.convert(self.mode)
            if self.size is not None:
                h, w = self.size
                if img.size != (w, h):
                    img = img.resize((w, h), Image.BILINEAR)
            else:
                img = _resize_short_centre_crop(img, int(self.resize_short or min(self.crop)), self.crop)
            array = np.asarray(img, dtype=np.uint8)
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)

    def batch_transform(self):
        from lab.data.augment import BatchTransform

        resize = tuple(self.model_resize) if self.model_resize else None
        return BatchTransform(self.mean, self.std, train=False, resize=resize, to_rgb=self.to_rgb)


def _resize_short_centre_crop(img, short: int, crop: Sequence[int] | None):
    """torchvision's Resize(short) + CenterCrop(crop) on a PIL image (bilinear, antialiased)."""
    from PIL import Image

    w, h = img.size
    if min(w, h) != short:
        scale = short / min(w, h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        img = img.resize((w, h), Image.BILINEAR)
    if crop is None:
        return img
    ch, cw = int(crop[0]), int(crop[1])
    if w < cw or h < ch:  # torchvision pads; a resize to at least the crop is simpler and close
        img = img.resize((max(w, cw), max(h, ch)), Image.BILINEAR)
        w, h = img.size
    left, top = int(round((w - cw) / 2.0)), int(round((h - ch) / 2.0))
    return img.crop((left, top, left + cw, top + ch))
