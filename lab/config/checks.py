"""Checks on the composed config that need no data and no model, run before anything is
built or written: a typo in a number fails in one line within a second, not after the
dataset has loaded or the first epoch has run. Objects check their own arguments again
when they are built (the datamodule, the model, the task), with the same wording."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from lab.errors import ConfigError


def _number(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, default=None)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value cannot work."""
    lr = _number(cfg, "optimizer.lr")
    if lr is not None and lr <= 0:
        raise ConfigError(f"optimizer.lr must be positive, got {lr}")
    for key in ("data.batch_size", "data.eval_batch_size"):
        value = _number(cfg, key)
        if value is not None and (value <= 0 or value != int(value)):
            raise ConfigError(f"{key} must be a positive integer, got {value}")
    val_size = OmegaConf.select(cfg, "data.val_size", default=None)
    if val_size is not None:
        from lab.data.holdout import check_holdout

        check_holdout("data.val_size", val_size)
    ratio = _number(cfg, "data.noise_ratio")
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise ConfigError(f"data.noise_ratio must be in [0, 1), got {ratio}")
    model = cfg.get("model")
    if isinstance(model, DictConfig):
        for key in model:
            if "dropout" in str(key):
                value = _number(model, str(key))
                if value is not None and not 0.0 <= value < 1.0:
                    raise ConfigError(f"model.{key} must be in [0, 1), got {value}")
    top_k = _number(cfg, "task.top_k")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"task.top_k must be >= 1, got {top_k}")
    epochs = _number(cfg, "trainer.max_epochs")
    if epochs is not None and epochs < -1:
        raise ConfigError(f"trainer.max_epochs must be >= 0 (or -1 for no limit), got {epochs}")
