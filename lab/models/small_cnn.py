"""A small VGG-style CNN for small grey or colour images (digits, MNIST, CIFAR)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lab.models.blocks import GlobalAvgPool, norm2d


class SmallCNN(nn.Module):
    """Stages of `convs_per_stage` x (3x3 conv, norm, ReLU) then 2x2 max-pool.

    The pool is skipped once the feature map is 1 pixel wide, so the same model fits
    8x8 digits and 32x32 CIFAR; `dropout_conv` (Dropout2d) follows each stage.
    `pool: avg` averages the last map globally (any image size); `pool: flatten`
    keeps its spatial layout (more accurate on 28x28 garments). Then a hidden layer
    with dropout (`dropout`, alias `dropout_fc`) and the linear classifier.
    `features(x)` returns the penultimate features (for embeddings and pictures).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int] = (28, 28),
        channels: Sequence[int] = (32, 64, 128),
        convs_per_stage: int = 1,
        hidden: int = 128,
        dropout: float = 0.2,
        norm: str = "batch",
        pool: str = "avg",
        dropout_conv: float = 0.0,
        dropout_fc: float | None = None,
        name: str = "small_cnn",
    ) -> None:
        super().__init__()
        if dropout_fc is not None:  # the name the dropout-pair sweep sets; `dropout` is its short alias
            dropout = dropout_fc
        for key, value in (("dropout", dropout), ("dropout_conv", dropout_conv)):
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"model.{key} must be in [0, 1), got {value}")
        if not channels:
            raise ValueError("model.channels must list at least one stage width")
        layers: list[nn.Module] = []
        size = min(int(s) for s in image_size)
        prev = in_channels
        for width in channels:
            for _ in range(int(convs_per_stage)):
                conv = nn.Conv2d(prev, int(width), 3, padding=1, bias=norm == "none")
                layers += [conv, norm2d(norm, int(width)), nn.ReLU(inplace=True)]
                prev = int(width)
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            if dropout_conv > 0:
                layers.append(nn.Dropout2d(float(dropout_conv)))
        self.body = nn.Sequential(*layers)
        if pool == "avg":
            self.pool, flat = GlobalAvgPool(flatten=False), prev
        elif pool == "flatten":
            h, w = (int(s) for s in image_size)
            for _ in range(sum(1 for m in layers if isinstance(m, nn.MaxPool2d))):
                h, w = h // 2, w // 2
            self.pool, flat = nn.Identity(), prev * h * w
        else:
            raise ValueError(f"model.pool must be 'avg' or 'flatten', got {pool!r}")
        self.neck = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, int(hidden)), nn.ReLU(inplace=True), nn.Dropout(float(dropout))
        )
        self.head = nn.Linear(int(hidden), num_classes)
        self.feature_dim = int(hidden)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.pool(self.body(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
