"""The configurable ResNet of the depth and residual-vs-plain studies."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lab.models.blocks import Head, check_dropout, conv_bn_relu, norm2d, pooled_stages


class ResidualBlock(nn.Module):
    """Two 3x3 conv+BN with dropout between them; the shortcut is a 1x1 conv+BN
    projection when the width changes. `residual=False` drops the shortcut (a plain
    block of the same depth, for the residual ablation)."""

    def __init__(self, cin: int, cout: int, norm: str, dropout: float, residual: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn_relu(cin, cout, 3, norm), nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=norm == "none"), norm2d(norm, cout),
        )
        self.residual = residual
        if residual and cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=norm == "none"), norm2d(norm, cout))
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.body(x)
        return self.act(out + self.shortcut(x) if self.residual else out)


class ResNet(nn.Module):
    """Stem (5x5 conv, max-pool), one residual block per entry of `widths` with a
    2x2 max-pool after each while the map is larger than 1 pixel, then the head
    (hidden fc + classifier). Depth = 2 x len(widths) + 3 (stem, hidden fc, output):
    4 widths = 11 layers, 6 = 15, 8 = 19. `depth`, when set, takes that many blocks
    (repeating the last width)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: Sequence[int] = (64, 64),
                 widths: Sequence[int] = (64, 128, 256, 512), stem_width: int = 64, hidden: int = 512,
                 dropout_conv: float = 0.0, dropout_fc: float = 0.0, norm: str = "batch",
                 residual: bool = True, depth: int | None = None) -> None:
        super().__init__()
        check_dropout(dropout_conv=dropout_conv, dropout_fc=dropout_fc)
        if depth is not None:  # the depth study: 11, 15, 19 layers = 4, 6, 8 blocks
            if depth < 5 or (depth - 3) % 2:
                raise ValueError(f"model.depth for resnet must be 2n+3 (11, 15, 19), got {depth}")
            n = (depth - 3) // 2
            widths = list(widths[:n]) + [int(widths[-1])] * max(0, n - len(widths))
        def stage(prev: int, width: int) -> tuple[list[nn.Module], list[nn.Module]]:
            return [ResidualBlock(prev, width, norm, float(dropout_conv), bool(residual))], []

        self.body, prev = pooled_stages(in_channels, stem_width, widths, image_size, norm, stage)
        self.head = Head(prev, num_classes, hidden=int(hidden), dropout=float(dropout_fc))
        self.depth = 2 * len(widths) + 3

    def features(self, x):
        return self.head.features(self.body(x))

    def forward(self, x):
        return self.head(self.body(x))
