"""A lab run's model as a retrieval backbone: rebuilt from the run's config, its data's eval preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.data.imagenet_stats import IMAGENET_MEAN, IMAGENET_STD
from lab.errors import ConfigError, LabError
from lab.retrieval.encoder import Encoder, file_sha256
from lab.retrieval.preprocess import Preprocess
from lab.runs.folder import CONFIG


def checkpoint_encoder(path: Path, image_size: int | None, model_inputs: dict[str, Any] | None = None) -> Encoder:
    """A lab run's model from <run>/checkpoints/<name>.ckpt and the run's config (lab.runs.checkpoints
    reads both: weights_only loading, strict key matching, one-line errors)."""
    import torch
    from omegaconf import OmegaConf

    from lab.runs.checkpoints import checkpoint_file, find_run_config, load_weights, read_checkpoint, run_dir_of

    path = checkpoint_file(path, "--checkpoint").resolve()
    resolved = run_dir_of(path) / CONFIG  # lab's resolved copy: the run's own absolute data paths
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
