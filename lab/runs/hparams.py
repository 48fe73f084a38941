"""The HParams dashboard entry of a finished run: its parameters and its final metrics.

Written once, at the end, with real values (never Lightning's placeholder
hp_metric=-1). Only the session summaries are written, not an experiment summary,
so TensorBoard builds the table from the union of all runs under its logdir: every
job of a multirun appears as a row with its overridden parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Always shown, so runs launched with different overrides still line up.
CORE_KEYS = ("optimizer.lr", "data.batch_size", "trainer.max_epochs", "seed")
GROUPS = ("experiment", "data", "model", "optimizer", "scheduler")


def _scalar(value: Any) -> bool | int | float | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    if value is None:
        return "None"
    if isinstance(value, DictConfig) or OmegaConf.is_config(value):
        return str(OmegaConf.to_container(value, resolve=True))
    return str(value)


def collect_hparams(cfg: DictConfig, overrides: list[str], choices: Mapping[str, Any]) -> dict[str, Any]:
    """Group choices, core numbers, and every key overridden on the command line."""
    params: dict[str, Any] = {}
    for group in GROUPS:
        if group in choices:
            params[group] = _scalar(choices[group])
    keys = list(CORE_KEYS)
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key.startswith("hydra.") or key in GROUPS or key in keys:
            continue
        keys.append(key)
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, DictConfig):  # a group chosen by override, e.g. trainer=cpu
            value = choices.get(key, value)
        params[key] = _scalar(value)
    return params


def write_hparams(loggers: list, params: dict[str, Any], metric_keys: list[str]) -> None:
    """Write the session start/end summaries into each TensorBoard logger's run."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.tensorboard.summary import hparams
    from torch.utils.tensorboard.writer import FileWriter

    _, start, end = hparams(params, {key: 0.0 for key in metric_keys})
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            # An event file of its own in the run's log folder: TensorBoard reads a folder's files as
            # one run, and the metric values come from the scalars already logged there.
            writer = FileWriter(logger.log_dir)
            writer.add_summary(start)
            writer.add_summary(end)
            writer.close()
