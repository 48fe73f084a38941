"""Label noise for robustness studies.

Symmetric noise changes exactly round(r * N) of the N training labels, each to another class
drawn uniformly. Asymmetric noise changes round(r * n_c) labels of each source class c of the
mapping (n_c its training samples), all to that class's target; classes outside the mapping keep
their labels, so the share of changed labels over the whole set is below r. Which labels change
is drawn from the "noise" stream of the seed (lab.utils.seeds), never from the stream that
shuffles the batches: the mislabelled samples are spread over every epoch's batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from lab.errors import ConfigError
from lab.utils.seeds import generator


def symmetric_noise(labels: torch.Tensor, num_classes: int, ratio: float, seed: int) -> torch.Tensor:
    """Change exactly round(ratio * N) labels, each to a different class drawn uniformly
    from the other num_classes - 1. Returns the new labels (the input is not modified)."""
    gen = generator(seed, "noise")
    n = len(labels)
    count = round(ratio * n)
    chosen = torch.randperm(n, generator=gen)[:count]
    offsets = torch.randint(1, num_classes, (count,), generator=gen)
    noisy = labels.clone()
    noisy[chosen] = (labels[chosen] + offsets) % num_classes
    return noisy


def asymmetric_noise(labels: torch.Tensor, mapping: Mapping[int, int], ratio: float, seed: int) -> torch.Tensor:
    """For each source class in `mapping`, move round(ratio * n_class) of its samples to
    the mapped class (the class-dependent noise of Patrini et al., 2017)."""
    gen = generator(seed, "noise")
    noisy = labels.clone()
    for source in sorted(mapping):
        members = (labels == source).nonzero().flatten()
        count = round(ratio * len(members))
        chosen = members[torch.randperm(len(members), generator=gen)[:count]]
        noisy[chosen] = mapping[source]
    return noisy


def class_mapping(names: Sequence[str], pairs: Mapping[str, str] | Mapping[int, int]) -> dict[int, int]:
    """{source: target} given by class names or indices -> {index: index}, checked."""
    index = {name: i for i, name in enumerate(names)}
    out: dict[int, int] = {}
    for source, target in pairs.items():
        ids = []
        for value in (source, target):
            if isinstance(value, int) and 0 <= value < len(names):
                ids.append(value)
            elif str(value) in index:
                ids.append(index[str(value)])
            else:
                raise ConfigError(f"data.noise_mapping: unknown class {value!r}; classes are {list(names)}")
        if ids[0] == ids[1]:
            raise ConfigError(f"data.noise_mapping maps class {source!r} to itself")
        out[ids[0]] = ids[1]
    return out


def apply_noise(
    labels: torch.Tensor,
    class_names: Sequence[str],
    ratio: float,
    kind: str,
    seed: int,
    mapping: Mapping | None = None,
) -> torch.Tensor:
    """Dispatch on `kind` (symmetric | asymmetric) after checking the ratio."""
    if not 0.0 <= float(ratio) < 1.0:
        raise ConfigError(f"data.noise_ratio must be in [0, 1), got {ratio}")
    if kind == "symmetric":
        return symmetric_noise(labels, len(class_names), float(ratio), seed)
    if kind == "asymmetric":
        if not mapping:
            raise ConfigError(
                "data.noise_type=asymmetric needs a class mapping: this dataset has no standard one; "
                "set data.noise_mapping={source: target, ...} (class names or indices)"
            )
        return asymmetric_noise(labels, class_mapping(class_names, mapping), float(ratio), seed)
    raise ConfigError(f"data.noise_type must be 'symmetric' or 'asymmetric', got {kind!r}")
