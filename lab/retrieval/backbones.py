"""Backbones that turn image files into L2-normalised feature vectors.

Two kinds, both described by a plain dict stored in the index so that a query is
encoded exactly like the gallery was:

- torchvision (`--backbone resnet50`, the default): ImageNet weights (IMAGENET1K_V1, the
  file lab's `model=torchvision` also uses, from $TORCH_HOME/hub/checkpoints) or a local
  state dict (`--weights`); the classifier head is dropped, so ResNet-50 gives the
  2,048-d pooled features. Preprocessing: shorter side to 256/224 of the crop, centre
  crop (224), ImageNet mean/std; grey or RGBA images become RGB.
- a lab checkpoint (`--checkpoint <run>/checkpoints/<name>.ckpt`): the model is rebuilt
  from the run's config.yaml and its `features()` used; images are decoded the way that
  run's datamodule decoded them (channels, size, resize, to_rgb, normalisation stats).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.errors import ConfigError, DataNotFoundError, LabError
from lab.models.architectures import ARCHITECTURES
from lab.retrieval.checkpoint_backbone import checkpoint_encoder
from lab.retrieval.encoder import Encoder, file_sha256
from lab.retrieval.preprocess import Preprocess

BACKBONES = tuple(ARCHITECTURES)  # every torchvision architecture lab trains
DEFAULT_BACKBONE = "resnet50"


def build_encoder(backbone: str = DEFAULT_BACKBONE, weights: str | None = None, checkpoint: str | None = None,
                  image_size: int | None = None) -> Encoder:
    """The encoder `index` uses: a lab checkpoint, or a torchvision backbone with ImageNet or local weights."""
    if checkpoint:
        if weights:
            raise ConfigError("pass either --checkpoint (a lab run's model) or --weights (a torchvision state dict)")
        return checkpoint_encoder(Path(checkpoint).expanduser(), image_size)
    return _torchvision_encoder(backbone, weights, image_size or 224)


def encoder_from_index(backbone: dict[str, Any], preprocess: dict[str, Any], weights: str | None = None,
                       checkpoint: str | None = None) -> Encoder:
    """The encoder an index was built with (query and evaluate), optionally from a moved file.

    The preprocessing always comes from the index; a weights file whose SHA-256 differs
    from the one recorded gives a warning (the features would not be comparable)."""
    from rich.markup import escape

    from lab.utils.console import console

    kind = backbone.get("kind")
    if kind == "checkpoint":
        path = Path(checkpoint or backbone["checkpoint"]).expanduser()
        encoder = checkpoint_encoder(path, None, model_inputs=backbone.get("model_inputs"))
    elif kind == "torchvision":
        encoder = _torchvision_encoder(backbone["arch"], weights or backbone.get("weights_file"), 224)
    else:
        raise LabError(f"unknown backbone kind {kind!r} in the index")
    encoder.preprocess = Preprocess.from_dict(preprocess)
    recorded, now = backbone.get("sha256"), encoder.backbone.get("sha256")
    if recorded and now and recorded != now:
        source = encoder.backbone.get("weights_file") or encoder.backbone.get("checkpoint")
        console.print(f"[yellow]warning:[/yellow] {escape(str(source))} differs from the weights the index was built "
                      "with (SHA-256); distances will not be meaningful unless the gallery is indexed again",
                      highlight=False, soft_wrap=True)
    return encoder


def _torchvision_encoder(arch: str, weights: str | None, image_size: int) -> Encoder:
    import torchvision.models as tvm
    from torch import nn

    if arch not in BACKBONES:
        raise ConfigError(f"--backbone must be one of {', '.join(BACKBONES)}, got {arch!r}")
    net = getattr(tvm, ARCHITECTURES[arch].builder or arch)(weights=None)
    head = ARCHITECTURES[arch].head + "."
    info: dict[str, Any] = {"kind": "torchvision", "arch": arch}
    if weights:
        from lab.runs.checkpoints import checkpoint_file, read_checkpoint, state_dict_of

        path = checkpoint_file(weights, "--weights").resolve()
        state = state_dict_of(read_checkpoint(path, "--weights"), path, "--weights")
        if any(k.startswith("model.net.") for k in state):  # a lab checkpoint of model=torchvision
            state = {k.split("model.net.", 1)[1]: v for k, v in state.items() if k.startswith("model.net.")}
        info.update(weights="file", weights_file=str(path), sha256=file_sha256(path))
    else:
        enum = ARCHITECTURES[arch].weights
        state = _imagenet_weights(arch)
        url = getattr(tvm, enum).IMAGENET1K_V1.url
        info.update(weights=f"{enum}.IMAGENET1K_V1", weights_file=None, url=url)
    parent, _, leaf = ARCHITECTURES[arch].head.rpartition(".")
    owner = net.get_submodule(parent) if parent else net
    info["feature_dim"] = int(getattr(owner, leaf).in_features)  # what the classifier head receives
    setattr(owner, leaf, nn.Identity())
    from lab.runs.checkpoints import load_weights

    state = {k: v for k, v in state.items() if not k.startswith(head)}  # the classifier head is not used
    load_weights(net, state, weights or "the ImageNet weights", "--weights" if weights else "--backbone",
                 hint=f"expected torchvision's {arch} state dict; for a lab run's model use --checkpoint")
    return Encoder(net, net, Preprocess.imagenet(image_size), info)


def _imagenet_weights(arch: str) -> dict:
    """lab's ImageNet weights loader, with the hint pointing at this command's --weights."""
    from lab.models.torchvision_models import imagenet_state_dict, weights_cache_dir

    try:
        return imagenet_state_dict(arch)
    except DataNotFoundError as err:
        message = str(err).replace("model.weights_path=<file>", "--weights <file>")
        raise DataNotFoundError(f"{message} (the folder is $TORCH_HOME/hub/checkpoints, now {weights_cache_dir()})") \
            from None
