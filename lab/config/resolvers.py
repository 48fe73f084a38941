"""OmegaConf resolvers that configs use (registered when lab is imported)."""

from __future__ import annotations

from omegaconf import OmegaConf


def _if(condition, then, otherwise):
    """${lab_if:${upsample},224,null}: a switch in one line of YAML."""
    return then if condition else otherwise


def _direction(mode: str) -> str:
    """${lab_direction:${task.objective.mode}}: max -> maximize, min -> minimize (Optuna's words)."""
    from lab.config.objective import Objective

    return Objective(mode=str(mode)).direction


def _checkpoint_name(metric: str) -> str:
    """${lab_checkpoint_name:${task.objective.metric}}: ModelCheckpoint's filename pattern,
    `epoch{epoch:03d}-val_top1={val/top1:#.4g}` -> `epoch005-val_top1=0.9926.ckpt`: the metric's full
    name ('/' is a folder in a path, so '_') and its value after '=', never run together as in
    `top10.9926`; 4 significant digits, trailing zeros kept (`1.000`, `0.05914`)."""
    return "epoch{epoch:03d}-" + str(metric).replace("/", "_") + "={" + str(metric) + ":#.4g}"


def _unique_dir(base: str) -> str:
    """${lab_unique_dir:<path>} (hydra.run.dir, hydra.sweep.dir): a new folder, created here, at `<path>` or
    `<path>_1`, `<path>_2`, ... (lab.runs.folder.claim), so two runs launched in the same second with the
    same name never share one. Registered with use_cache: the answer is kept in the config, so every later
    resolution returns the same folder, also in a sweep's job configs (Hydra copies the cache) and in a
    launcher's job processes (the cache travels with the pickled config). Once Hydra has fixed the job's
    folder (hydra.runtime.output_dir is set, as in a config composed for a look, lab.config.compose) the
    path is returned as given and nothing is created."""
    from hydra.core.hydra_config import HydraConfig

    from lab.runs.folder import claim

    if HydraConfig.initialized() and OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None):
        return base
    return claim(base)


def register() -> None:
    for name, func in (("lab_if", _if), ("lab_direction", _direction), ("lab_checkpoint_name", _checkpoint_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, func)
    if not OmegaConf.has_resolver("lab_unique_dir"):
        OmegaConf.register_new_resolver("lab_unique_dir", _unique_dir, use_cache=True)
