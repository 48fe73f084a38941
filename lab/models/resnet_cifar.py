"""ResNet-20/32/44/56/110 for 32x32 inputs (He et al., 2016, section 4.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import nn

from lab.models.blocks import GlobalAvgPool, norm2d


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1, norm: str = "batch") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=norm == "none")
        self.bn1 = norm2d(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=norm == "none")
        self.bn2 = norm2d(norm, cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:  # option B: 1x1 projection
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=norm == "none"),
                                          norm2d(norm, cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)


class CifarResNet(nn.Module):
    """3x3 conv (16), then 3 stages of n BasicBlocks with 16/32/64 channels (stride 2
    between stages), global average pool, linear. depth = 6n + 2."""

    def __init__(self, in_channels: int, num_classes: int, image_size: Sequence[int] = (32, 32),
                 depth: int = 20, widths: Sequence[int] = (16, 32, 64), norm: str = "batch") -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"model.depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=norm == "none"),
                                  norm2d(norm, widths[0]), nn.ReLU(inplace=True))
        layers, prev = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(n):
                layers.append(BasicBlock(prev, width, stride=2 if (i > 0 and j == 0) else 1, norm=norm))
                prev = width
        self.layers = nn.Sequential(*layers)
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(prev, num_classes)
        self.feature_dim = prev
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x):
        return self.pool(self.layers(self.stem(x)))

    def forward(self, x):
        return self.fc(self.features(x))
