"""torchvision classifiers adapted to the data: new head, grey stem, small-input stem,
ImageNet weights from torchvision's cache or a local file, frozen backbone.

Every architecture lab can train is one entry of ARCHITECTURES: the torchvision.models
builder (the entry's name unless given), its weights enum and the dotted path of its final
nn.Linear (the head lab replaces). Adding one is one line (docs/extending.md), e.g.

    "mobilenet_v3_small": Arch("MobileNet_V3_Small_Weights", head="classifier.3"),

The rest is found, not listed: the stem is the first nn.Conv2d (adapted to grey input),
features(x) is the input of the head (lab/models/contract.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lab.errors import ConfigError, DataNotFoundError
from lab.models.architectures import ARCHITECTURES, Arch  # noqa: F401 - Arch: for registry entries
from lab.models.contract import final_linear


def architecture(name: str) -> Arch:
    """The ARCHITECTURES entry `name`, or one line listing the names there are."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"model.arch must be one of {sorted(ARCHITECTURES)}, got {name!r} "
                          "(add an entry to ARCHITECTURES in lab/models/torchvision_models.py)")
    return ARCHITECTURES[name]


def weights_cache_dir() -> Path:
    """Where torchvision keeps downloaded weights: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's IMAGENET1K_V1 weights for `arch`: from the cache, else downloaded
    (hash-checked by torch.hub); offline, one error naming the file and the folder."""
    import torchvision.models as tvm

    weights = getattr(tvm, architecture(arch).weights).IMAGENET1K_V1
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
    """A torchvision classifier (an ARCHITECTURES entry) resized to the data.

    - `num_classes`: the head (the entry's final nn.Linear) is replaced. A head that is an
      attribute of the network itself (`fc`: ResNets) becomes nn.Sequential(nn.Dropout(dropout),
      nn.Linear); one inside a classifier block (`classifier.6`: VGG) a plain nn.Linear, behind
      that block's own dropout (`dropout` does not apply there).
    - `in_channels=1`: the stem (first conv) takes one channel (pretrained: the sum of its RGB
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

        entry = architecture(arch)
        net = getattr(tvm, entry.builder or arch)(weights=None)
        if small_input_stem and not isinstance(net, tvm.ResNet):
            raise ConfigError(f"model.small_input_stem applies to ResNets, not {arch}")
        last = final_linear(net)
        if last is None or last[0] != entry.head:
            raise ConfigError(f"ARCHITECTURES[{arch!r}].head={entry.head!r} in lab/models/torchvision_models.py "
                              f"is not {arch}'s final nn.Linear ({last[0] if last else 'it has none'} is)")
        state = self._load_state(arch, weights_path) if pretrained or weights_path else None
        lab_format = state is not None and _is_lab_state(state, net, entry.head)
        if state is not None and not lab_format:  # torchvision's layout: before the stem and head change
            _load(net, state, arch, entry.head)
        self.arch = arch
        if small_input_stem:
            old = net.conv1
            net.conv1 = nn.Conv2d(3, old.out_channels, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        if in_channels != 3:
            stem = next(name for name, m in net.named_modules() if isinstance(m, nn.Conv2d))
            _set(net, stem, _adapt_first_conv(_get(net, stem), in_channels))
        width = _get(net, entry.head).in_features
        head = nn.Linear(width, num_classes)
        _set(net, entry.head, nn.Sequential(nn.Dropout(dropout), head) if "." not in entry.head else head)
        if lab_format:  # a lab run's weights: the same layout as this model, head included
            _load(net, state, arch, None)
        self.net = net
        self.head_name = entry.head
        self.feature_dim = width
        if freeze_backbone:
            for name, param in net.named_parameters():
                param.requires_grad = name.startswith(f"{entry.head}.")

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

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features [N, feature_dim]: what the head receives."""
        seen: list[torch.Tensor] = []
        hook = _get(self.net, self.head_name).register_forward_hook(lambda m, args, out: seen.append(args[0]))
        try:
            self.net(x)
        finally:
            hook.remove()
        return seen[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _get(net: nn.Module, path: str) -> nn.Module:
    return net.get_submodule(path)


def _set(net: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, name, module)


def _is_lab_state(state: dict[str, torch.Tensor], net: nn.Module, head: str) -> bool:
    """Whether a state dict is a lab model's (its head already replaced: `fc.1.weight`, or a
    `classifier.6.weight` of another shape than torchvision's) rather than torchvision's."""
    if f"{head}.1.weight" in state:
        return True
    weight = state.get(f"{head}.weight")
    return weight is not None and tuple(weight.shape) != tuple(_get(net, head).weight.shape)


def _load(net: nn.Module, state: dict[str, torch.Tensor], arch: str, head: str | None) -> None:
    """Loads `state`; with `head`, torchvision's layout whose head is dropped (it is replaced)."""
    if head is not None:
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes that differ
        raise ConfigError(f"model.weights_path: keys do not match {arch} ({' '.join(str(err).split())[:300]})") \
            from None
    if unexpected or [k for k in missing if head is None or not k.startswith(f"{head}.")]:
        raise ConfigError(f"model.weights_path: keys do not match {arch} (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]})")


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        if in_channels == 1:
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new
