"""Every distinct job of a sweep, composed and built on the meta device before the first job runs.

A sweep value that cannot run (a depth the model family does not have, a plateau factor of 1,
a top-k above the number of classes) used to fail job by job, after the earlier jobs had
trained. Here each distinct job (seeds aside: they build the same things) is composed with
Hydra's compose API, checked (lab.config.checks), and its datamodule, model, task, optimizer
and schedule are built, the model on the meta device (no memory, no compute). The first
failure stops the sweep in one line naming the job and its values.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from omegaconf import DictConfig, OmegaConf

from lab.errors import ConfigError, LabError

MAX_CHECKED = 256  # distinct jobs composed and built; a larger grid checks its first ones


def sweep_jobs(fixed: list[str], swept: list[str], params: dict) -> list[list[str]]:
    """The override lists of a sweep's jobs, as Hydra's basic sweeper makes them: the config's
    hydra.sweeper.params, then the command line (`fixed` and `swept`, e.g. seed=0,1,2), a key given
    again replacing the earlier values in place; the product of all."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    items = [*(f"{key}={value}" for key, value in params.items()), *fixed, *swept]
    axes: dict[str, list[str]] = {}
    for override in parser.parse_overrides(items):
        key = override.get_key_element()
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() \
            else [override.get_value_element_as_str()]
        axes[key] = [f"{key}={v}" for v in values]
    return [list(job) for job in itertools.product(*axes.values())]


def distinct(jobs: Iterable[list[str]], ignore: tuple[str, ...] = ("seed",)) -> list[list[str]]:
    """One job per configuration: jobs that differ only in `ignore`d keys build the same things."""
    seen, out = set(), []
    for job in jobs:
        key = tuple(o for o in job if _key(o) not in ignore)
        if key not in seen:
            seen.add(key)
            out.append(job)
    return out


def check_jobs(conf_dir: str, fixed: list[str], jobs: list[list[str]]) -> int:
    """Composes and builds each job (see the module doc); returns how many were checked."""
    from hydra import compose, initialize_config_dir

    checked = 0
    data_inputs: dict[str, tuple[dict, dict]] = {}
    fixed_keys = {_key(o) for o in fixed}
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        for job in jobs[:MAX_CHECKED]:
            label = " ".join(o for o in job if _key(o) not in fixed_keys) or "(the only job)"
            try:
                cfg = compose(config_name="config", overrides=[*fixed, *job])
                build_on_meta(cfg, data_inputs)
            except LabError as err:
                raise ConfigError(f"sweep job {label} cannot run: {_one_line(err)}") from None
            except Exception as err:  # noqa: BLE001 - any failure to build is this job's, said in one line
                raise ConfigError(f"sweep job {label} cannot run: {_one_line(err)}") from None
            checked += 1
    return checked


def build_on_meta(cfg: DictConfig, data_inputs: dict[str, tuple[dict, dict]]) -> None:
    """Checks `cfg`, then builds its datamodule (once per distinct data node: loads are cached in
    this process, so the first job reuses them), its model on the meta device, its task, optimizer
    and schedule."""
    import torch
    from hydra.utils import instantiate

    from lab.build import instantiate_node
    from lab.config.checks import check_config
    from lab.tasks.schedulers import build_optimizer

    check_config(cfg)
    data_key = OmegaConf.to_yaml(cfg.data, resolve=True)
    if data_key not in data_inputs:
        datamodule = instantiate(cfg.data, seed=cfg.seed, _convert_="all")
        datamodule.setup("fit")
        data_inputs[data_key] = (datamodule.model_inputs(), datamodule.task_inputs())
    model_inputs, task_inputs = data_inputs[data_key]
    with torch.device("meta"):
        model = instantiate_node(cfg.model, **model_inputs)
    scheduler = instantiate(cfg.scheduler, _convert_="all") if cfg.get("scheduler") and \
        "_target_" in cfg.scheduler else None
    optimizer = instantiate(cfg.optimizer, _convert_="all")
    task = instantiate(cfg.task, _convert_="all", model=model, optimizer=optimizer, scheduler=scheduler,
                       **task_inputs)
    if scheduler is not None:
        # a schedule checks its numbers when built (e.g. ReduceLROnPlateau's factor < 1)
        probe = build_optimizer(optimizer, [torch.nn.Parameter(torch.zeros(1))])
        kwargs = {}
        func = getattr(scheduler, "func", scheduler)
        import inspect

        if "steps_per_epoch" in inspect.signature(func).parameters:
            kwargs["steps_per_epoch"] = 1
        scheduler(optimizer=probe, **kwargs)
    del task


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _one_line(err: BaseException) -> str:
    cause = err.__cause__ if err.__cause__ is not None and "Error in call to target" in str(err) else err
    return " ".join(str(cause).split()) or type(cause).__name__
