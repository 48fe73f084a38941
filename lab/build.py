"""Building a job's pieces from a composed config, shared by lab.run, lab.eval and lab.predict.

One place decides how the datamodule, model, task and Trainer come out of the config, so a
checkpoint evaluated later is rebuilt exactly the way it was trained (same seed, same order
of construction, same data split and eval transform). Heavy imports stay inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf


def instantiate_node(node: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, minus `name` (a label for folders and tables, not an argument)."""
    from hydra.utils import instantiate

    if "name" in node and "_target_" in node:
        # Resolve first: a detached copy would lose interpolations into the rest of the config.
        node = OmegaConf.create({k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "name"})
    return instantiate(node, _convert_="all", **kwargs)


def as_float(value: Any) -> float:
    """A logged metric (tensor or number) as a plain float for metrics.json."""
    return float(value.item() if hasattr(value, "item") else value)


@dataclass
class Parts:
    """What a job trains or evaluates: the data sizes the model and the task."""

    datamodule: Any
    model: Any
    task: Any


def build_parts(cfg: DictConfig) -> Parts:
    """Seed, then the datamodule (set up), the model sized from it, and the task around the model.

    The order is fixed: seeding first and building the model right after the data keeps a
    run's initial weights the same whichever entry point builds it.
    """
    import lightning as L
    from hydra.utils import instantiate

    from lab.errors import ConfigError

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    scheduler = None
    if cfg.get("scheduler"):
        if "_target_" not in cfg.scheduler:
            raise ConfigError(
                f"scheduler: {dict(cfg.scheduler)} is set but no scheduler is chosen (scheduler=none?); "
                "choose one with scheduler=<cosine|plateau|multistep|exponential> or drop those keys"
            )
        scheduler = instantiate(cfg.scheduler, _convert_="all")
    datamodule = instantiate(cfg.data, seed=cfg.seed, _convert_="all")
    datamodule.setup("fit")
    # The data sizes the model and the task (the only coupling between the boxes).
    model = instantiate_node(cfg.model, **datamodule.model_inputs())
    task = instantiate(
        cfg.task,
        _convert_="all",
        model=model,
        optimizer=instantiate(cfg.optimizer, _convert_="all"),
        scheduler=scheduler,
        **datamodule.task_inputs(),
    )
    return Parts(datamodule, model, task)


def build_trainer(cfg: DictConfig, fitting: bool = True, loggers: bool = True, **kwargs: Any):
    """The Trainer with the config's callbacks and loggers.

    `fitting=False` (lab.eval, lab.predict) drops the callbacks that only make sense while
    training (checkpointing, early stopping), so evaluating never writes a checkpoint.
    """
    from hydra.utils import instantiate

    callbacks = [instantiate(c, _convert_="all") for c in (cfg.get("callbacks") or {}).values() if c]
    if not fitting:
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

        callbacks = [c for c in callbacks if not isinstance(c, (ModelCheckpoint, EarlyStopping))]
    found = [instantiate(c, _convert_="all") for c in (cfg.get("logger") or {}).values() if c] if loggers else []
    return instantiate(cfg.trainer, callbacks=callbacks, logger=found or False, **kwargs)
