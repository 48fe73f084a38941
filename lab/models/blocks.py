"""Building blocks shared by the convolutional models."""

from __future__ import annotations

from torch import nn


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


def check_dropout(**values: float) -> None:
    for key, value in values.items():
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"model.{key} must be in [0, 1), got {value}")


class Head(nn.Module):
    """Global average pool -> [hidden linear + ReLU + dropout] -> linear classifier.
    `features()` is the penultimate vector (for embeddings and feature pictures)."""

    def __init__(self, channels: int, num_classes: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
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
