"""Image augmentation from config, in two forms that do the same thing:

- `BatchTransform`: batched tensor ops on uint8 batches, on the device that trains
  (the fast path: no per-image Python);
- `per_sample_transform`: the classic torchvision-on-PIL pipeline, one image at a
  time in DataLoader workers (the standard path, `data.fast_path=false`).

Train batches get the random parts (crop with padding, flip, cutout); val/test
only the deterministic ones (normalise, resize, grey to RGB).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def as_size(value: int | Sequence[int] | None) -> tuple[int, int] | None:
    """`224` or `[224, 224]` -> (224, 224); None stays None."""
    if value is None:
        return None
    if isinstance(value, int):
        size = (value, value)
    else:
        size = tuple(int(v) for v in value)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"an image size must be a positive int or [height, width], got {value!r}")
    return size  # type: ignore[return-value]


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad each image by `padding` and crop it back at a random offset: a random
    translation by up to `padding` pixels. The (2p+1)^2 windows are a strided view
    (unfold), so the whole batch is cut with one gather and no per-image Python."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (n, c, 2p+1, 2p+1, h, w), no copy
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    return windows[torch.arange(n, device=x.device), :, dy, dx]


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a `size` x `size` square (clipped at the border) at a random centre of each image."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), device=x.device, generator=generator)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device, generator=generator)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - size // 2, cx - size // 2
    hole = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return x.masked_fill(hole.unsqueeze(1), 0.0)


def epoch_stream_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of the "augmentation" stream of (seed, epoch, rank) (lab.utils.seeds)."""
    from lab.utils.seeds import stream_seed

    return stream_seed(seed, "augmentation", epoch, rank)


class BatchTransform:
    """uint8 (N, C, H, W) -> normalised float, with train-time randomness from a seeded generator."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        crop_padding: int = 0,
        hflip: bool = False,
        cutout: int = 0,
        resize: tuple[int, int] | None = None,
        to_rgb: bool = False,
        seed: int = 0,
    ) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.train = train
        self.crop_padding = int(crop_padding)
        self.hflip = bool(hflip)
        self.cutout = int(cutout)
        self.resize = resize
        self.to_rgb = to_rgb
        self.seed = seed
        self._stream_seed = epoch_stream_seed(int(seed), 0)  # the current epoch's stream (set_epoch)
        self._generators: dict[str, torch.Generator] = {}
        self._consts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def set_epoch(self, epoch: int, rank: int = 0) -> None:
        """Restart the random stream for train epoch `epoch` on process `rank`.

        The augmentation of an epoch then depends on (seed, epoch, rank) only, not on how many
        batches this object has transformed before: a resumed run replays the same crops and
        flips, and DDP ranks draw different ones. A fresh transform starts at epoch 0 of rank 0."""
        self._stream_seed = epoch_stream_seed(int(self.seed), int(epoch), int(rank))
        self._generators.clear()

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self._stream_seed)
        return self._generators[key]

    def _scale_shift(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._consts:
            scale = (1.0 / (255.0 * self.std)).view(1, -1, 1, 1).to(device)
            shift = (self.mean / self.std).view(1, -1, 1, 1).to(device)
            self._consts[key] = (scale, shift)
        return self._consts[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gen = self._generator(x.device) if self.train else None
        if self.train and self.crop_padding > 0:
            x = random_crop(x, self.crop_padding, gen)
        if self.train and self.hflip:
            x = random_flip(x, gen)
        scale, shift = self._scale_shift(x.device)
        x = x.float().mul_(scale).sub_(shift)
        if self.resize is not None and tuple(x.shape[-2:]) != self.resize:
            x = F.interpolate(x, size=self.resize, mode="bilinear", align_corners=False,
                              antialias=self.resize[0] < x.shape[-2])
        if self.train and self.cutout > 0:
            x = cutout(x, self.cutout, gen)
        if self.to_rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x


class _Cutout:
    """torchvision-style per-image cutout (zero after normalisation = the mean)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return cutout(img.unsqueeze(0), self.size)[0]


class _GreyToRGB:
    """One grey channel repeated three times, for models built for colour images."""

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return img.expand(3, -1, -1)


def per_sample_transform(
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    image_size: tuple[int, int],
    crop_padding: int = 0,
    hflip: bool = False,
    cutout: int = 0,
    resize: tuple[int, int] | None = None,
    to_rgb: bool = False,
):
    """The same augmentation as BatchTransform, as a torchvision Compose on PIL images."""
    from torchvision import transforms as T

    steps: list = []
    if train and crop_padding > 0:
        steps.append(T.RandomCrop(image_size, padding=crop_padding))
    if train and hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if resize is not None and resize != tuple(image_size):
        steps.append(T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR, antialias=True))
    if train and cutout > 0:
        steps.append(_Cutout(cutout))
    if to_rgb and len(mean) == 1:
        steps.append(_GreyToRGB())
    return T.Compose(steps)
