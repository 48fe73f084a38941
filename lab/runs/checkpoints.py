"""lab checkpoints: reading their weights safely, and finding the run that wrote them.

Weights are read with `torch.load(weights_only=True)`: a checkpoint is data, and
unpickling arbitrary objects from a file would run code. lab's Lightning checkpoints
(weights, optimizer state, loop counters, the task's plain hyperparameters) load this way.
Loading is strict: a checkpoint that does not fit the model stops with one line that
names the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lab.errors import ConfigError, DataNotFoundError, LabError
from lab.runs.folder import CHECKPOINTS, CONFIG, HYDRA

# Where a run folder keeps its config, in order of preference: Hydra's unresolved copy
# (so ${paths...} resolve afresh for the new job), then lab's resolved config.yaml.
CONFIG_FILES = (f"{HYDRA}/{CONFIG}", CONFIG)
_SHOW = 5  # keys named in a mismatch message, per kind


def checkpoint_file(path: str | Path, what: str) -> Path:
    """The checkpoint as an existing file, or a one-line error naming what is there instead."""
    file = Path(str(path)).expanduser()
    if file.is_file():
        return file
    folder = file.parent
    nearby = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    hint = f"; checkpoints in {folder}: {', '.join(nearby)}" if nearby else ""
    raise DataNotFoundError(f"{what}: {file} does not exist{hint}")


def read_checkpoint(path: str | Path, what: str) -> dict[str, Any]:
    """torch.load(weights_only=True) on CPU, with one-line errors for unreadable or unsafe files."""
    import pickle
    import zipfile

    import torch

    file = checkpoint_file(path, what)
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LabError(f"{what}: {file} holds objects other than tensors and plain containers, which lab does not "
                       f"unpickle (torch.load with weights_only=True refused: {first})") from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LabError(f"{what}: {file} is not a readable PyTorch checkpoint ({first})") from err
    if not isinstance(obj, dict):
        raise LabError(f"{what}: {file} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def state_dict_of(checkpoint: dict[str, Any], path: str | Path, what: str) -> dict[str, Any]:
    """The weights of a Lightning checkpoint (`state_dict`), or the dict itself when it is a bare state dict."""
    import torch

    state = checkpoint.get("state_dict")
    if isinstance(state, dict):
        return state
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    raise LabError(f"{what}: {path} has no state_dict (keys: {', '.join(map(str, list(checkpoint)[:8]))}); "
                   "expected a lab checkpoint from outputs/.../checkpoints/")


def _named(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def load_weights(module: Any, state: dict[str, Any], path: str | Path, what: str, hint: str = "") -> None:
    """Load `state` into `module` strictly; a mismatch is one ConfigError naming the first keys of each kind."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{label} {_named(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape (checkpoint vs model)", shapes)) if keys]
        if hint:
            parts.append(hint)
        raise ConfigError(f"{what}: {path} does not fit this model: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def run_dir_of(ckpt: Path) -> Path:
    """The run folder a checkpoint belongs to: <run>/checkpoints/x.ckpt -> <run>; otherwise the ckpt's folder."""
    ckpt = ckpt.resolve()
    return ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS else ckpt.parent


def find_run_config(ckpt: Path, run_dir: str | Path | None = None) -> Path:
    """The config file of the run that wrote `ckpt` (see CONFIG_FILES), or a one-line error."""
    folder = Path(str(run_dir)).expanduser() if run_dir else run_dir_of(ckpt)
    for name in CONFIG_FILES:
        if (folder / name).is_file():
            return folder / name
    looked = " and ".join(str(folder / name) for name in CONFIG_FILES)
    raise DataNotFoundError(
        f"no run config for {ckpt}: looked for {looked}; the checkpoint must sit in a lab run folder "
        "(<run>/checkpoints/<file>.ckpt) or name that folder with run_dir=<run folder>"
    )


def source_model(ckpt: Path) -> str:
    """`model=<name> (<target>)` of the run that wrote `ckpt`, for mismatch messages; '' when unknown."""
    try:
        cfg = OmegaConf.load(find_run_config(ckpt))
        model = cfg.get("model") or {}
        name, target = model.get("name"), model.get("_target_")
    except (LabError, OSError, ValueError):
        return ""
    if not name and not target:
        return ""
    return f"the checkpoint's run used model={name} ({target})"


def init_weights(task: Any, path: str | Path, hint: str = "") -> Path:
    """lab.run init_from=<ckpt>: the weights only (no optimizer, scheduler or epoch), strictly."""
    file = checkpoint_file(path, "init_from")
    state = state_dict_of(read_checkpoint(file, "init_from"), file, "init_from")
    load_weights(task, state, file, "init_from", hint=" ".join(x for x in (source_model(file), hint) if x))
    return file


def rebase_output_dir(cfg: DictConfig) -> None:
    """A resolved config.yaml names the old run folder everywhere ${paths.output_dir} was used;
    point those values back at ${paths.output_dir} so the new job writes into its own folder."""
    old = OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=False)
    if not isinstance(old, str) or not old or "${" in old:
        return

    def walk(node: Any) -> None:
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else enumerate(node)
        for key, value in list(items):
            if OmegaConf.is_config(value):
                walk(value)
            elif isinstance(value, str) and (value == old or value.startswith(old.rstrip("/") + "/")):
                node[key] = "${paths.output_dir}" + value[len(old.rstrip("/")):]

    walk(cfg)
    cfg.paths.output_dir = "${hydra:runtime.output_dir}"
