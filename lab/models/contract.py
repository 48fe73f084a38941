"""The model contract: what any model lab trains must offer, checked when the model is built.

A model is a plain `torch.nn.Module`, built from config (`model._target_`) with keyword
arguments the datamodule supplies (`datamodule.model_inputs()`):

- image classification data: `in_channels`, `num_classes`, `image_size` ([height, width]);
- function data (regression): `in_features`, `out_features`.

For classification data it must also have

- `forward(x)` -> logits [N, num_classes];
- `features(x)` -> the penultimate vector [N, D] (metric learning, feature pictures, retrieval);
- a final `nn.Linear` with `num_classes` outputs, which maps `features(x)` to the logits
  (metric learning freezes and trains it on its own).

`ImageClassifier` states it as a Protocol; `check_model` tells a model that does not meet it
what is missing, in one line.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from lab.errors import ConfigError

IMAGE_INPUTS = ("in_channels", "num_classes", "image_size")
FUNCTION_INPUTS = ("in_features", "out_features")


@runtime_checkable
class ImageClassifier(Protocol):
    def forward(self, x: Tensor) -> Tensor: ...  # logits [N, num_classes]

    def features(self, x: Tensor) -> Tensor: ...  # penultimate features [N, D]


def accepted_inputs(model_class: type) -> set[str] | None:
    """The keyword arguments a model class takes (None when it takes **kwargs)."""
    params = inspect.signature(model_class).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def check_inputs(model_class: type, inputs: Mapping[str, Any], target: str) -> None:
    """One line if `model_class` does not take the arguments the data supplies."""
    accepted = accepted_inputs(model_class)
    if accepted is None:
        return
    missing = [k for k in inputs if k not in accepted]
    if missing:
        raise ConfigError(f"model {target} does not take {', '.join(missing)}, which the data supplies "
                          f"({', '.join(inputs)}); add them to its __init__ (see lab/models/contract.py)")


def final_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The last nn.Linear in the model's module order, with its name."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return found[-1] if found else None


def check_model(model: Any, inputs: Mapping[str, Any], target: str = "") -> None:
    """One line naming what a built model lacks of the contract above."""
    name = target or type(model).__name__
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name} built a {type(model).__name__}, not a torch.nn.Module")
    if "num_classes" not in inputs:
        return  # regression: any module mapping [N, in_features] to [N, out_features]
    num_classes = int(inputs["num_classes"])
    missing = []
    if not callable(getattr(model, "features", None)):
        missing.append("features(x) returning the penultimate features")
    last = final_linear(model)
    if last is None or last[1].out_features != num_classes:
        got = f"its last is {last[0]} with {last[1].out_features}" if last else "it has none"
        missing.append(f"a final nn.Linear with num_classes={num_classes} outputs ({got})")
    if missing:
        raise ConfigError(f"model {name} does not meet lab's model contract: it needs {'; '.join(missing)} "
                          "(see lab/models/contract.py)")
