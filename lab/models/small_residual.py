"""Small nets for small image datasets (a few thousand 112 px images): a base CNN and
residual nets of BasicBlocks or Bottlenecks, for the plain-vs-residual comparison."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import nn

from lab.models.blocks import Head, check_dropout, conv_bn_relu, norm2d
from lab.models.resnet_cifar import BasicBlock


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a projection shortcut when shapes change."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, norm: str = "batch") -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            *conv_bn_relu(cin, width, 1, norm), *conv_bn_relu(width, width, 3, norm, stride=stride),
            nn.Conv2d(width, cout, 1, bias=norm == "none"), norm2d(norm, cout),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=norm == "none"),
                                          norm2d(norm, cout))

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x), inplace=True)


def _stem(in_channels: int, width: int, norm: str) -> nn.Sequential:
    """7x7/2 conv + 3x3/2 max-pool: 112 px in, 28 px out."""
    return nn.Sequential(*conv_bn_relu(in_channels, width, 7, norm, stride=2), nn.MaxPool2d(3, stride=2, padding=1))


class BaseCNN(nn.Module):
    """The baseline: stem, then per width a 3x3 conv (stride 2 after the first), head."""

    def __init__(self, in_channels: int, num_classes: int, image_size: Sequence[int] = (112, 112),
                 widths: Sequence[int] = (32, 64, 128, 256), dropout: float = 0.0, norm: str = "batch") -> None:
        super().__init__()
        check_dropout(dropout=dropout)
        layers: list[nn.Module] = [_stem(in_channels, widths[0], norm)]
        prev = widths[0]
        for i, width in enumerate(widths):
            layers += conv_bn_relu(prev, width, 3, norm, stride=1 if i == 0 else 2)
            prev = width
        self.body = nn.Sequential(*layers)
        self.head = Head(prev, num_classes, dropout=float(dropout))

    def features(self, x):
        return self.head.features(self.body(x))

    def forward(self, x):
        return self.head(self.body(x))


class ResidualNet(nn.Module):
    """Stem, then stages of `blocks[i]` BasicBlocks or Bottlenecks of width `widths[i]`
    (stride 2 at the start of every stage but the first), head."""

    def __init__(self, in_channels: int, num_classes: int, image_size: Sequence[int] = (112, 112),
                 block: str = "basic", blocks: Sequence[int] = (1, 1, 1, 1), widths: Sequence[int] = (32, 64, 128, 256),
                 dropout: float = 0.0, norm: str = "batch") -> None:
        super().__init__()
        check_dropout(dropout=dropout)
        kinds = {"basic": BasicBlock, "bottleneck": Bottleneck}
        if block not in kinds:
            raise ValueError(f"model.block must be 'basic' or 'bottleneck', got {block!r}")
        if len(blocks) != len(widths):
            raise ValueError(f"model.blocks {list(blocks)} and model.widths {list(widths)} must have the same length")
        kind = kinds[block]
        layers: list[nn.Module] = [_stem(in_channels, widths[0], norm)]
        prev = widths[0]
        for i, (count, width) in enumerate(zip(blocks, widths)):
            for j in range(int(count)):
                layers.append(kind(prev, width, stride=2 if (i > 0 and j == 0) else 1, norm=norm))
                prev = width * kind.expansion
        self.body = nn.Sequential(*layers)
        self.head = Head(prev, num_classes, dropout=float(dropout))

    def features(self, x):
        return self.head.features(self.body(x))

    def forward(self, x):
        return self.head(self.body(x))
