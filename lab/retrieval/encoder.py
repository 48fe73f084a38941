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

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lab.data.images import BadImageError
from lab.errors import ConfigError, DataNotFoundError, LabError

if TYPE_CHECKING:
    import torch

BACKBONES = ("resnet18", "resnet34", "resnet50", "vgg16")
DEFAULT_BACKBONE = "resnet50"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocess:
    """How one file becomes the model's input; stored in the index as a dict.

    Per file (PIL): convert to `mode`; then either shorter side to `resize_short` and a
    centre crop to `crop` (torchvision), or a plain resize to `size` (lab's decoders).
    Per batch (lab.data.augment.BatchTransform, as lab's eval batches): normalise with
    mean/std, resize to `model_resize`, grey to RGB with `to_rgb`.
    """

    mode: str = "RGB"
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    resize_short: int | None = None
    crop: list[int] | None = None
    size: list[int] | None = None
    model_resize: list[int] | None = None
    to_rgb: bool = False

    @classmethod
    def imagenet(cls, image_size: int = 224) -> Preprocess:
        return cls(resize_short=round(image_size * 256 / 224), crop=[image_size, image_size])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def input_size(self) -> tuple[int, int]:
        size = self.model_resize or self.crop or self.size
        return int(size[0]), int(size[1])

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """uint8 [C, H, W] of one file; raises what PIL raises on a bad file."""
        from PIL import Image

        with Image.open(path) as img:
            img = img.convert(self.mode)
            if self.size is not None:
                h, w = self.size
                if img.size != (w, h):
                    img = img.resize((w, h), Image.BILINEAR)
            else:
                img = _resize_short_centre_crop(img, int(self.resize_short or min(self.crop)), self.crop)
            array = np.asarray(img, dtype=np.uint8)
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)

    def batch_transform(self):
        from lab.data.augment import BatchTransform

        resize = tuple(self.model_resize) if self.model_resize else None
        return BatchTransform(self.mean, self.std, train=False, resize=resize, to_rgb=self.to_rgb)


def _resize_short_centre_crop(img, short: int, crop: Sequence[int] | None):
    """torchvision's Resize(short) + CenterCrop(crop) on a PIL image (bilinear, antialiased)."""
    from PIL import Image

    w, h = img.size
    if min(w, h) != short:
        scale = short / min(w, h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        img = img.resize((w, h), Image.BILINEAR)
    if crop is None:
        return img
    ch, cw = int(crop[0]), int(crop[1])
    if w < cw or h < ch:  # torchvision pads; a resize to at least the crop is simpler and close
        img = img.resize((max(w, cw), max(h, ch)), Image.BILINEAR)
        w, h = img.size
    left, top = int(round((w - cw) / 2.0)), int(round((h - ch) / 2.0))
    return img.crop((left, top, left + cw, top + ch))


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------------


class Encoder:
    """A model in eval mode, its preprocessing and a description to store in the index."""

    def __init__(self, model: torch.nn.Module, embed: Callable, preprocess: Preprocess,
                 backbone: dict[str, Any]) -> None:
        self.model = model.eval()
        self.embed = embed
        self.preprocess = preprocess
        self.backbone = backbone

    def encode(self, paths: Sequence[Path], batch_size: int = 32, workers: int = 0, skip_bad: bool = False,
               description: str = "encoding", show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(float32 unit-length features [kept, D], kept mask [len(paths)]), with a progress bar.

        A file that cannot be decoded stops with one line naming it, or with `skip_bad` is
        left out (the mask says which) and counted in a warning."""
        import torch
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from lab.retrieval.search import normalize
        from lab.utils.console import console

        dataset = _Files(list(paths), self.preprocess)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                             collate_fn=_collate, persistent_workers=False)
        transform = self.preprocess.batch_transform()
        chunks: list[torch.Tensor] = []
        kept = np.ones(len(dataset), dtype=bool)
        bad: list[tuple[Path, str]] = []
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]} img/s"), TimeElapsedColumn(), TextColumn("eta"),
                   TimeRemainingColumn())
        start = 0
        progress_bar = Progress(*columns, console=console, transient=False, disable=not show_progress)
        with progress_bar as progress, torch.inference_mode():
            task = progress.add_task(description, total=len(dataset), rate="-")
            try:
                for images, errors in loader:
                    ok = [e is None for e in errors]
                    for offset, error in enumerate(errors):
                        if error is not None:
                            path = dataset.paths[start + offset]
                            if not skip_bad:
                                raise BadImageError(f"{path}: cannot decode image ({error}); fix or remove it, "
                                                    "or pass --skip-bad to leave unreadable files out")
                            bad.append((path, error))
                            kept[start + offset] = False
                    if any(ok):
                        x = transform(images[torch.tensor(ok)])
                        chunks.append(normalize(self.embed(x)))
                    start += len(errors)
                    elapsed = progress.tasks[0].elapsed or 0.0
                    progress.update(task, advance=len(errors), rate=f"{start / elapsed:.1f}" if elapsed else "-")
            except BaseException:  # the error is one line: leave no half-done bar above it
                progress.live.transient = True
                raise
        if bad:
            console.print(f"[yellow]warning:[/yellow] skipped {len(bad)} unreadable image(s) (--skip-bad), "
                          f"first: {escape(str(bad[0][0]))} ({escape(bad[0][1])})", highlight=False, soft_wrap=True)
        if not chunks:
            raise BadImageError(f"none of the {len(dataset)} image(s) could be decoded")
        return torch.cat(chunks).numpy().astype(np.float32, copy=False), kept


class _Files:
    """DataLoader dataset over image files: (uint8 [C, H, W], None) or (zeros, error text)."""

    def __init__(self, paths: list[Path], preprocess: Preprocess) -> None:
        self.paths = paths
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image, UnidentifiedImageError

        try:
            return self.preprocess.load(self.paths[i]), None
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            h, w = self.preprocess.crop or self.preprocess.size or (1, 1)
            channels = 1 if self.preprocess.mode == "L" else 3
            return np.zeros((channels, int(h), int(w)), dtype=np.uint8), f"{type(err).__name__}: {err}".splitlines()[0]


def _collate(items):
    import torch

    images = torch.from_numpy(np.stack([item[0] for item in items]))
    return images, [item[1] for item in items]


def build_encoder(backbone: str = DEFAULT_BACKBONE, weights: str | None = None, checkpoint: str | None = None,
                  image_size: int | None = None) -> Encoder:
    """The encoder `index` uses: a lab checkpoint, or a torchvision backbone with ImageNet or local weights."""
    if checkpoint:
        if weights:
            raise ConfigError("pass either --checkpoint (a lab run's model) or --weights (a torchvision state dict)")
        return _checkpoint_encoder(Path(checkpoint).expanduser(), image_size)
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
        encoder = _checkpoint_encoder(path, None, model_inputs=backbone.get("model_inputs"))
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
    net = getattr(tvm, arch)(weights=None)
    head = "fc." if arch.startswith("resnet") else "classifier.6."
    info: dict[str, Any] = {"kind": "torchvision", "arch": arch}
    if weights:
        from lab.runs.checkpoints import checkpoint_file, read_checkpoint, state_dict_of

        path = checkpoint_file(weights, "--weights").resolve()
        state = state_dict_of(read_checkpoint(path, "--weights"), path, "--weights")
        if any(k.startswith("model.net.") for k in state):  # a lab checkpoint of model=torchvision
            state = {k.split("model.net.", 1)[1]: v for k, v in state.items() if k.startswith("model.net.")}
        info.update(weights="file", weights_file=str(path), sha256=file_sha256(path))
    else:
        from lab.models.torchvision_models import ARCHS

        state = _imagenet_weights(arch)
        url = getattr(tvm, ARCHS[arch]).IMAGENET1K_V1.url
        info.update(weights=f"{ARCHS[arch]}.IMAGENET1K_V1", weights_file=None, url=url)
    if arch.startswith("resnet"):
        net.fc = nn.Identity()
        info["feature_dim"] = 512 if arch in ("resnet18", "resnet34") else 2048
    else:
        net.classifier[6] = nn.Identity()
        info["feature_dim"] = 4096
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


# ---------------------------------------------------------------------------------------------
# lab checkpoints
# ---------------------------------------------------------------------------------------------


def _checkpoint_encoder(path: Path, image_size: int | None, model_inputs: dict[str, Any] | None = None) -> Encoder:
    """A lab run's model from <run>/checkpoints/<name>.ckpt and the run's config (lab.runs.checkpoints
    reads both: weights_only loading, strict key matching, one-line errors)."""
    import torch
    from omegaconf import OmegaConf

    from lab.runs.checkpoints import checkpoint_file, find_run_config, load_weights, read_checkpoint, run_dir_of

    path = checkpoint_file(path, "--checkpoint").resolve()
    resolved = run_dir_of(path) / "config.yaml"  # lab's resolved copy: the run's own absolute data paths
    config = resolved if resolved.is_file() else find_run_config(path)
    try:
        cfg = OmegaConf.load(config)
    except Exception as err:
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        raise LabError(f"{config}: cannot read the run's config ({reason})") from None
    if "model" not in cfg or "data" not in cfg:
        raise LabError(f"{config}: not a lab run's config (no model or data section)")
    ckpt = read_checkpoint(path, "--checkpoint")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise LabError(f"--checkpoint: {path} is not a lab (Lightning) checkpoint: it has no state_dict")
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    preprocess = None
    if model_inputs is None:
        model_inputs, preprocess = _run_data(cfg, state, ckpt, image_size)
    model = _build_model(cfg, model_inputs, config)
    load_weights(model, state, path, "--checkpoint")
    if not callable(getattr(model, "features", None)):
        raise ConfigError(f"{config}: model {cfg.model.get('_target_')} has no features() to retrieve with")
    info = {"kind": "checkpoint", "checkpoint": str(path), "config": str(config),
            "model": str(cfg.model.get("_target_")), "data": str(cfg.data.get("name", cfg.data.get("_target_"))),
            "model_inputs": model_inputs, "sha256": file_sha256(path)}
    model.eval()
    with torch.inference_mode():
        h, w = model_inputs["image_size"]
        info["feature_dim"] = int(model.features(torch.zeros(1, model_inputs["in_channels"], h, w)).shape[1])
    return Encoder(model, model.features, preprocess or Preprocess(), info)


def _build_model(cfg, model_inputs: dict[str, Any], config: Path):
    """The run's model, sized like the run (lab.build.instantiate_node); pretrained weights are not
    fetched, since the checkpoint replaces them."""
    from lab.build import instantiate_node

    off = {k: v for k, v in (("pretrained", False), ("weights_path", None)) if k in cfg.model}
    try:
        return instantiate_node(cfg.model, **model_inputs, **off)
    except LabError:
        raise
    except Exception as err:
        cause = err.__cause__ or err
        reason = f"{type(cause).__name__}: {cause}".splitlines()[0]
        raise LabError(f"{config}: cannot build the run's model ({reason})") from None


def _run_data(cfg, state: dict, ckpt: dict, image_size: int | None) -> tuple[dict[str, Any], Preprocess]:
    """The run's model inputs and eval preprocessing, from its datamodule when its data can be
    loaded (exact normalisation statistics); otherwise from the config and the weights."""
    from hydra.utils import instantiate
    from rich.markup import escape

    from lab.utils.console import console

    try:
        datamodule = instantiate(cfg.data, seed=cfg.get("seed", 0), _convert_="all")
        datamodule.setup("fit")
        raw = datamodule.splits["train"][0]
        inputs = datamodule.model_inputs()
        preprocess = Preprocess(mode="L" if raw.shape[1] == 1 else "RGB", mean=list(datamodule.mean),
                                std=list(datamodule.std), size=[int(raw.shape[2]), int(raw.shape[3])],
                                model_resize=list(datamodule.resize) if datamodule.resize else None,
                                to_rgb=bool(datamodule.to_rgb))
        return {k: inputs[k] for k in ("in_channels", "num_classes", "image_size")}, preprocess
    except Exception as err:  # the data is not here: rebuild what we can from the config
        reason = f"{type(err.__cause__ or err).__name__}: {err.__cause__ or err}".splitlines()[0]
    from lab.data.augment import as_size

    data = cfg.data
    convs = [v for v in state.values() if v.ndim == 4]
    num_classes = (ckpt.get("hyper_parameters") or {}).get("num_classes")
    size = as_size(data.get("image_size")) or as_size(image_size)
    if not convs or num_classes is None or size is None:
        raise LabError(f"cannot rebuild the run's data ({reason}) and its config does not say the image size; "
                       "make the run's data available or pass --image-size")
    in_channels = int(convs[0].shape[1])
    to_rgb = bool(data.get("to_rgb", False))
    channels = 1 if in_channels == 1 or to_rgb or data.get("grayscale") else 3
    normalize = data.get("normalize", "dataset")
    if normalize == "imagenet":
        mean, std = (list(IMAGENET_MEAN), list(IMAGENET_STD)) if channels == 3 else ([0.449], [0.226])
    elif normalize == "none":
        mean, std = [0.0] * channels, [1.0] * channels
    else:
        mean, std = [0.5] * channels, [0.25] * channels
        console.print(f"[yellow]warning:[/yellow] the run's data could not be loaded ({escape(reason)}), so its "
                      "normalisation statistics are unknown; using mean 0.5, std 0.25", highlight=False,
                      soft_wrap=True)
    resize = as_size(data.get("resize"))
    inputs = {"in_channels": in_channels, "num_classes": int(num_classes), "image_size": list(resize or size)}
    preprocess = Preprocess(mode="L" if channels == 1 else "RGB", mean=mean, std=std, size=list(size),
                            model_resize=list(resize) if resize else None, to_rgb=to_rgb)
    return inputs, preprocess
