"""The torchvision architectures lab can train and retrieve with: one entry each, no torch at import
(lab.retrieve's command line lists them without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    """One torchvision classifier: its weights enum in torchvision.models (`pretrained` loads its
    IMAGENET1K_V1), the dotted path of its final nn.Linear, and the builder function's name
    (None: the entry's own name)."""

    weights: str
    head: str
    builder: str | None = None


ARCHITECTURES: dict[str, Arch] = {
    "resnet18": Arch("ResNet18_Weights", head="fc"),
    "resnet34": Arch("ResNet34_Weights", head="fc"),
    "resnet50": Arch("ResNet50_Weights", head="fc"),
    "vgg16": Arch("VGG16_Weights", head="classifier.6"),
}
