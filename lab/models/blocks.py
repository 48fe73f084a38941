"""Building blocks shared by the convolutional models."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class GlobalAvgPool(nn.Module):
    """The mean over height and width, [N, C, H, W] -> [N, C] (or [N, C, 1, 1] with `flatten=False`).

    What AdaptiveAvgPool2d(1) + Flatten compute, but its CUDA backward is deterministic, which
    AdaptiveAvgPool2d's is not: with trainer.deterministic=true lab's own models need no exception."""

    def __init__(self, flatten: bool = True) -> None:
        super().__init__()
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=not self.flatten)


def norm2d(kind: str, channels: int) -> nn.Module:
    """`batch` -> BatchNorm2d, `none` -> identity (the normalisation ablation)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"model.norm must be 'batch' or 'none', got {kind!r}")


def conv_bn_relu(cin: int, cout: int, kernel: int, norm: str, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=norm == "none"),
            norm2d(norm, cout), nn.ReLU(inplace=True)]


def pooled_stages(in_channels: int, stem_width: int, widths: Sequence[int], image_size: Sequence[int], norm: str,
                  stage: Callable[[int, int], tuple[list[nn.Module], list[nn.Module]]]) -> tuple[nn.Sequential, int]:
    """A 5x5 conv stem, then one stage per width: `stage(prev, width)` gives the layers before and after
    a 2x2 max-pool, which is left out once the feature map is down to 1 px. Returns the body and its width."""
    size = min(int(s) for s in image_size)
    layers: list[nn.Module] = [*conv_bn_relu(in_channels, stem_width, 5, norm)]
    if size >= 2:
        layers.append(nn.MaxPool2d(2))
        size //= 2
    prev = stem_width
    for width in widths:
        before, after = stage(prev, int(width))
        layers += before
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        layers += after
        prev = int(width)
    return nn.Sequential(*layers), prev


def check_dropout(**values: float) -> None:
    for key, value in values.items():
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"model.{key} must be in [0, 1), got {value}")


class Head(nn.Module):
    """Global average pool -> [hidden linear + ReLU + dropout] -> linear classifier.
    `features()` is the penultimate vector (for embeddings and feature pictures)."""

    def __init__(self, channels: int, num_classes: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.pool = GlobalAvgPool()
        if hidden > 0:
            self.neck = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
            width = hidden
        else:
            self.neck = nn.Dropout(dropout)
            width = channels
        self.fc = nn.Linear(width, num_classes)
        self.feature_dim = width

    def features(self, x):
        return self.neck(self.pool(x))

    def forward(self, x):
        return self.fc(self.features(x))
