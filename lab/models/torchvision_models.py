"""torchvision's ResNet-18/34/50 and VGG-16, adapted to the data: new head, grey stem,
small-input stem, ImageNet weights from torchvision's cache or a local file, frozen
backbone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lab.errors import ConfigError, DataNotFoundError

ARCHS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights",
         "vgg16": "VGG16_Weights"}


def weights_cache_dir() -> Path:
    """Where torchvision keeps downloaded weights: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's IMAGENET1K_V1 weights for `arch`: from the cache, else downloaded
    (hash-checked by torch.hub); offline, one error naming the file and the folder."""
    import torchvision.models as tvm

    weights = getattr(tvm, ARCHS[arch]).IMAGENET1K_V1
    filename = Path(weights.url).name
    cached = weights_cache_dir() / filename
    if not cached.is_file():
        try:
            torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True)
        except Exception as err:  # no network
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            raise DataNotFoundError(
                f"pretrained weights {filename} are not in {weights_cache_dir()} and could not be downloaded "
                f"({reason}); fetch {weights.url} into {weights_cache_dir()}, or pass model.weights_path=<file>"
            ) from None
    return torch.load(cached, map_location="cpu", weights_only=True)


class TorchvisionClassifier(nn.Module):
    """A torchvision classifier resized to the data.

    - `num_classes`: the last layer is replaced (fc for ResNets, classifier[6] for VGG).
    - `in_channels=1`: the first conv takes one channel (pretrained: the sum of its RGB
      filters, so a grey image gives what its RGB copy would).
    - `small_input_stem` (ResNets): 3x3 stride-1 first conv and no max-pool, the known
      recipe for 32-64 px images trained from scratch.
    - `pretrained`: ImageNet weights (see imagenet_state_dict); `weights_path`: a local
      state dict (torchvision's or a lab checkpoint's), loaded with weights_only=True.
    - `freeze_backbone`: only the new head trains.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: Sequence[int] = (224, 224),
                 arch: str = "resnet18", pretrained: bool = False, weights_path: str | None = None,
                 freeze_backbone: bool = False, small_input_stem: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        import torchvision.models as tvm

        if arch not in ARCHS:
            raise ConfigError(f"model.arch must be one of {sorted(ARCHS)}, got {arch!r}")
        if small_input_stem and arch == "vgg16":
            raise ConfigError("model.small_input_stem applies to ResNets, not vgg16")
        net = getattr(tvm, arch)(weights=None)
        if pretrained or weights_path:
            state = self._load_state(arch, weights_path)
            missing, unexpected = net.load_state_dict(state, strict=False)
            if unexpected or [k for k in missing if not k.startswith(("fc.", "classifier."))]:
                raise ConfigError(f"model.weights_path: keys do not match {arch} (missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]})")
        self.arch = arch
        if arch.startswith("resnet"):
            if small_input_stem:
                old = net.conv1
                net.conv1 = nn.Conv2d(3, old.out_channels, 3, stride=1, padding=1, bias=False)
                net.maxpool = nn.Identity()
            if in_channels != 3:
                net.conv1 = _adapt_first_conv(net.conv1, in_channels)
            width = net.fc.in_features
            net.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))
            head_names = ("fc.",)
        else:
            if in_channels != 3:
                net.features[0] = _adapt_first_conv(net.features[0], in_channels)
            width = net.classifier[6].in_features
            net.classifier[6] = nn.Linear(width, num_classes)
            head_names = ("classifier.6.",)
        self.net = net
        self.feature_dim = width
        if freeze_backbone:
            for name, param in net.named_parameters():
                param.requires_grad = name.startswith(head_names)

    @staticmethod
    def _load_state(arch: str, weights_path: str | None) -> dict[str, torch.Tensor]:
        if not weights_path:
            return imagenet_state_dict(arch)
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise DataNotFoundError(f"model.weights_path: {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if "state_dict" in state:  # a lab (Lightning) checkpoint: strip the task's "model.net." prefix
            state = {k.split("model.net.", 1)[1]: v for k, v in state["state_dict"].items() if "model.net." in k}
        return state

    def features(self, x):
        net = self.net
        if self.arch.startswith("resnet"):
            x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
            return torch.flatten(net.avgpool(x), 1)
        x = torch.flatten(net.avgpool(net.features(x)), 1)
        return net.classifier[:6](x)

    def forward(self, x):
        return self.net(x)


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        if in_channels == 1:
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new
