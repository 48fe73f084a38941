"""Building a job's pieces from a composed config, shared by lab.run, lab.eval and lab.predict.

One place decides how the datamodule, model, task and Trainer come out of the config, so a
checkpoint evaluated later is rebuilt exactly the way it was trained (same seed, same order
of construction, same data split and eval transform). Heavy imports stay inside functions.
"""

from __future__ import annotations

from collections.abc import Sequence
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

    Every random stream has its own seed (lab.utils.seeds): the data draws its split, noise,
    order and augmentation from generators of its own, and the global generators are seeded
    for the "weights" stream just before the model is built, so a run's initial weights are
    the same whichever entry point builds it and share no seed with any other stream.
    """
    import lightning as L
    from hydra.utils import instantiate

    from lab.errors import ConfigError
    from lab.utils.seeds import stream_seed

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
    inputs = datamodule.model_inputs()
    L.seed_everything(stream_seed(cfg.seed, "weights", bits=32), workers=True, verbose=False)
    target = str(cfg.model.get("_target_", ""))
    if target:
        from hydra.utils import get_class

        from lab.models.contract import check_inputs, check_model

        try:
            model_class = get_class(target)
        except Exception:  # noqa: BLE001 - an unknown target fails in instantiate, with Hydra's own message
            model_class = None
        if isinstance(model_class, type):
            check_inputs(model_class, inputs, target)
    model = instantiate_node(cfg.model, **inputs)
    if target:
        check_model(model, inputs, target)
    task = instantiate(
        cfg.task,
        _convert_="all",
        model=model,
        optimizer=instantiate(cfg.optimizer, _convert_="all"),
        scheduler=scheduler,
        **datamodule.task_inputs(),
    )
    apply_speed_switches(task, speed_settings(cfg))
    return Parts(datamodule, model, task)


# Keys of the trainer node that are lab's, not Lightning Trainer arguments.
SPEED_KEYS = ("channels_last", "compile")


def trains_on_cuda(trainer_cfg: Any) -> bool:
    """Whether this trainer config will run on a CUDA device (accelerator gpu/cuda, or auto with one
    present), asked the fork-safe way (lab.train.device: no CUDA context before the Trainer)."""
    accelerator = str(trainer_cfg.get("accelerator", "auto")).lower()
    if accelerator in ("gpu", "cuda"):
        return True
    if accelerator != "auto":
        return False
    from lab.train.device import cuda_device_count

    return cuda_device_count() > 0


def resolve_speed_defaults(trainer_cfg: Any, task_precision: str | None = None) -> dict[str, Any]:
    """The trainer node with its `auto` settings decided for the device the run will use.

    On a CUDA device: bf16 mixed precision when every visible GPU has it (Ampere and later),
    fp16 mixed before; `task_precision` instead when the task names one (regression: fp32);
    the cudnn autotuner unless the run asks to be deterministic (the autotuner picks kernels by
    timing them); channels-last (NHWC) convolutions. Elsewhere: fp32, no autotuner, the
    model's own layout (experiments that are faster NHWC on CPU set task.channels_last).

    `deterministic: true` on CUDA becomes Lightning's "warn": deterministic kernels wherever
    torch has one, and a warning (not a crash at the first backward) for the few ops that have
    none, such as AdaptiveAvgPool2d's backward in torchvision's models."""
    from lab.errors import ConfigError

    node = dict(OmegaConf.to_container(trainer_cfg, resolve=True)) if isinstance(trainer_cfg, DictConfig) \
        else dict(trainer_cfg)
    deterministic = node.get("deterministic") not in (None, False, "false", "False")
    if deterministic and node.get("benchmark") is True:
        raise ConfigError("trainer.deterministic and trainer.benchmark=true contradict each other: the cudnn "
                          "autotuner picks kernels by timing them; leave trainer.benchmark=auto (off when "
                          "deterministic) or set trainer.deterministic=false")
    auto = [k for k in ("precision", "benchmark", "channels_last") if str(node.get(k)) == "auto"]
    cuda = trains_on_cuda(node) if auto or deterministic or "bf16" in str(node.get("precision")) else False
    if cuda and "bf16" in str(node.get("precision")):
        from lab.train.device import all_have_bf16, describe

        if not all_have_bf16():
            raise ConfigError(f"trainer.precision={node['precision']} needs a GPU with bf16 (compute capability "
                              f"8.0, Ampere, or later); this machine has {describe()}: use trainer.precision=auto "
                              "(16-mixed there) or 32-true")
    if "precision" in auto:
        node["precision"] = "32-true"
        if cuda:
            from lab.train.device import all_have_bf16

            node["precision"] = task_precision or ("bf16-mixed" if all_have_bf16() else "16-mixed")
    if "benchmark" in auto:
        node["benchmark"] = cuda and not deterministic
    if "channels_last" in auto:
        node["channels_last"] = cuda
    if cuda and node.get("deterministic") is True:
        node["deterministic"] = "warn"
    return node


def apply_speed_switches(task: Any, trainer_cfg: Any) -> None:
    """trainer.channels_last and trainer.compile, applied to the task's model.

    channels_last turns on the task's NHWC layout (tasks without images have none and ignore
    it). compile wraps the model's forward with torch.compile in place (nn.Module.compile), so
    parameter names, checkpoints and strict loading stay as without it; a task whose steps call
    more than forward (metric learning's features) compiles those itself (`compile_model`)."""
    if trainer_cfg.get("channels_last") and hasattr(task, "channels_last"):
        task.channels_last = True
    if trainer_cfg.get("compile"):
        from lab.errors import ConfigError

        if callable(getattr(task, "compile_model", None)):  # the task knows what its steps call
            task.compile_model()
            return
        model = getattr(task, "model", None)
        if model is None or not callable(getattr(model, "compile", None)):
            raise ConfigError(f"trainer.compile=true needs a task with a torch model; {type(task).__name__} has none")
        model.compile()


def task_class_attribute(cfg: DictConfig, name: str, default: Any = None) -> Any:
    """A class attribute of the configured task (without building it), or `default`."""
    target = OmegaConf.select(cfg, "task._target_")
    if not target:
        return default
    from hydra.utils import get_class

    try:
        return getattr(get_class(str(target)), name, default)
    except Exception:  # noqa: BLE001 - an unknown target fails later, with Hydra's own message
        return default


def speed_settings(cfg: DictConfig) -> dict[str, Any]:
    """The trainer node with its `auto` values decided for this run's device and task."""
    return resolve_speed_defaults(cfg.get("trainer") or {}, task_class_attribute(cfg, "auto_precision"))


def build_trainer(cfg: DictConfig, fitting: bool = True, loggers: bool = True, callbacks: Sequence[Any] = (),
                  **kwargs: Any):
    """The Trainer with the config's callbacks and loggers, plus `callbacks` (from code that drives
    a run, such as bench/'s clocks).

    `fitting=False` (lab.eval, lab.predict) drops the callbacks that only make sense while
    training (checkpointing, early stopping), so evaluating never writes a checkpoint.
    """
    import warnings

    from hydra.utils import instantiate

    from lab.runs.loggers import build_loggers
    from lab.train import ddp_launch
    from lab.train.distributed import reset_after_previous_job

    # lab's tasks log epoch values that are already the same on every DDP process (torchmetrics
    # states synced in compute(), or equal by construction), so they are logged without
    # Lightning's sync_dist; its advice to add it would only add an all-reduce.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(train|val|test)/")
    reset_after_previous_job()  # the next job of a multirun starts its own DDP processes
    extra = list(callbacks)
    callbacks = [instantiate(c, _convert_="all") for c in (cfg.get("callbacks") or {}).values() if c]
    # Built (so their settings are checked) but not handed over when they have nothing to do in
    # this run (viz off): Lightning calls every callback at every hook, ~40 calls a training step.
    callbacks = [c for c in callbacks if getattr(c, "active", True)]
    if not fitting:
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

        callbacks = [c for c in callbacks if not isinstance(c, (ModelCheckpoint, EarlyStopping))]
    callbacks += extra
    found = build_loggers(cfg) if loggers else []  # a tracker not installed: one line (lab.runs.loggers)
    # Resolved in the whole config (interpolations), minus lab's own keys.
    node = {k: v for k, v in speed_settings(cfg).items() if k not in SPEED_KEYS}
    if not fitting:  # evaluation repeats the run's numbers: the same kernels every time, no autotuner
        node["benchmark"] = False
    # lab's loaders shard by rank themselves; a run config saved before the key existed gets the same.
    node.setdefault("use_distributed_sampler", False)
    if node.get("strategy") == "ddp" and task_class_attribute(cfg, "ddp_unused_parameters", False):
        node["strategy"] = "ddp_find_unused_parameters_true"  # parts of the model sit out some epochs
    if may_launch_processes(node):
        ddp_launch.install()  # rank > 0 processes re-run this job, into this job's folder
    return instantiate(OmegaConf.create(node), callbacks=callbacks, logger=found or False, **kwargs)


def may_launch_processes(node: dict[str, Any]) -> bool:
    """Whether Lightning may start rank > 0 processes for this trainer node (a DDP strategy, several
    devices or nodes), so that lab.train.ddp_launch must set their command."""
    strategy, devices = str(node.get("strategy", "auto")), str(node.get("devices", "auto"))
    if "ddp" in strategy or int(node.get("num_nodes", 1) or 1) > 1:
        return True
    if devices == "auto":
        from lab.train.device import cuda_device_count

        return trains_on_cuda(node) and cuda_device_count() > 1
    if devices == "-1":
        return True
    if devices.isdigit():
        return int(devices) > 1
    return len([d for d in devices.strip("[]").split(",") if d.strip()]) > 1  # a list of device indices
