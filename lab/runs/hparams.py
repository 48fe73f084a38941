"""The HParams dashboard entry of a finished run: its parameters and its final metrics.

Written once, at the end, with real values (never Lightning's placeholder
hp_metric=-1). Only the session summaries are written, not an experiment summary,
so TensorBoard builds the table from the union of all runs under its logdir: every
job of a multirun appears as a row with its overridden parameters. The same parameters
reach MLflow as params and W&B as config (lab.runs.loggers writes them all).
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
    typed: dict[str, str] = {}
    for item in overrides:
        key, _, text = item.partition("=")
        key = key.lstrip("+~")
        if key.startswith("hydra.") or key in GROUPS or key in keys:
            continue
        keys.append(key)
        typed[key] = text
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, DictConfig):  # a group chosen by override, e.g. trainer=cpu
            # Hydra records no choice for a list of options (logger=[tensorboard,mlflow]): as typed
            value = choices.get(key) or typed.get(key) or value
        params[key] = _scalar(value)
    return params


def write_hparams(loggers: list, params: dict[str, Any], metric_keys: list[str]) -> None:
    """The run's parameters and final metrics in each chosen logger: TensorBoard's HParams entry,
    MLflow's params, W&B's config (lab.runs.loggers.log_run_summary)."""
    from lab.runs.loggers import log_run_summary

    log_run_summary(loggers, params, metric_keys)
