"""A multilayer perceptron: fits 1-D functions (`data=function`) or classifies flattened images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class MLP(nn.Module):
    """Linear layers of `widths` (depth = len(widths)), each followed by `activation`
    and dropout, then a linear output layer.

    Sized from the data: `in_features`/`out_features` from a regression datamodule, or
    `in_channels`, `image_size` and `num_classes` from an image datamodule (the image
    is flattened). `widths: [64, 64]` with sigmoid is the classic 1-64-64-1 fitter.
    """

    def __init__(
        self,
        in_features: int | None = None,
        out_features: int | None = None,
        widths: Sequence[int] = (64, 64),
        activation: str = "sigmoid",
        dropout: float = 0.0,
        in_channels: int | None = None,
        image_size: Sequence[int] | None = None,
        num_classes: int | None = None,
        name: str = "mlp",
    ) -> None:
        super().__init__()
        if in_features is None and in_channels is not None and image_size is not None:
            in_features = int(in_channels) * int(image_size[0]) * int(image_size[1])
        out_features = out_features if out_features is not None else num_classes
        if in_features is None or out_features is None:
            raise ValueError("the MLP needs in_features/out_features (or in_channels, image_size, num_classes) "
                             "from the datamodule's model_inputs()")
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        if isinstance(widths, int) or not all(int(w) > 0 for w in widths):
            raise ValueError(f"model.widths must be a list of positive layer widths, got {widths}")
        layers: list[nn.Module] = [nn.Flatten()] if in_channels is not None else []
        prev = int(in_features)
        for width in widths:
            layers += [nn.Linear(prev, int(width)), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            prev = int(width)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(prev, int(out_features))
        self.feature_dim = prev

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
