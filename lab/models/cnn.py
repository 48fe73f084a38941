"""The plain CNN of the depth/dropout/normalisation studies."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lab.models.blocks import Head, check_dropout, conv_bn_relu, pooled_stages

MAX_STAGES = 7  # 64 doubled 6 times is 4096 channels


class CNN(nn.Module):
    """Stem (5x5 conv, `stem_width` channels, max-pool), then one stage per entry of
    `widths`: [3x3 conv, 3x3 conv, max-pool] (the pool is skipped once the map is
    1 pixel). Depth = 2 x len(widths) conv layers: 64-128-256-512 is the 8-layer net,
    adding 1024 and 2048 gives 10 and 12. Dropout `dropout_conv` after each stage,
    `dropout_fc` in the head; `norm: batch|none`. `depth` (8, 10, 12), when set,
    replaces `widths` by depth/2 stages doubling from the first width: 64-128-256-512-1024-2048
    at the default widths, 16-32-...-512 from widths=[16, ...] (a scaled-down study)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: Sequence[int] = (64, 64),
                 widths: Sequence[int] = (64, 128, 256, 512), stem_width: int = 64, hidden: int = 512,
                 dropout_conv: float = 0.0, dropout_fc: float = 0.0, norm: str = "batch",
                 depth: int | None = None) -> None:
        super().__init__()
        check_dropout(dropout_conv=dropout_conv, dropout_fc=dropout_fc)
        if depth is not None:  # the depth study: 8, 10, 12 layers = 4, 5, 6 stages, widths doubling
            if depth < 2 or depth % 2 or depth // 2 > MAX_STAGES:
                raise ValueError(f"model.depth for cnn must be even, 2..{2 * MAX_STAGES} (8, 10, 12), got {depth}")
            widths = [int(widths[0]) * 2 ** i for i in range(depth // 2)]
        def stage(prev: int, width: int) -> tuple[list[nn.Module], list[nn.Module]]:
            convs = [*conv_bn_relu(prev, width, 3, norm), *conv_bn_relu(width, width, 3, norm)]
            return convs, [nn.Dropout2d(dropout_conv)] if dropout_conv > 0 else []

        self.body, prev = pooled_stages(in_channels, stem_width, widths, image_size, norm, stage)
        self.head = Head(prev, num_classes, hidden=int(hidden), dropout=float(dropout_fc))
        self.depth = 2 * len(widths)

    def features(self, x):
        return self.head.features(self.body(x))

    def forward(self, x):
        return self.head(self.body(x))
