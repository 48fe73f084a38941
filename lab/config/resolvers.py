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
    """${lab_checkpoint_name:${task.objective.metric}}: `epoch{epoch:03d}-top1_{val/top1:.4g}`,
    ModelCheckpoint's filename pattern with the objective's value (`top1_0.9926`, not `top10.9926`)."""
    return "epoch{epoch:03d}-" + str(metric).rsplit("/", 1)[-1] + "_{" + str(metric) + ":.4g}"


def register() -> None:
    for name, func in (("lab_if", _if), ("lab_direction", _direction), ("lab_checkpoint_name", _checkpoint_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, func)
