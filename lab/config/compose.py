"""The config `python -m lab.run <overrides>` composes, built in-process.

For code that runs lab's jobs without going through Hydra's command line (the tests, the
benchmarks, notebooks): the same config files and overrides, with Hydra's runtime (the run
folder, the job number) filled in the way a real run has them.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def compose(overrides: list[str], output_dir: str | Path | None = None, drop_hydra: bool = False) -> DictConfig:
    """The composed config; with `output_dir`, Hydra's runtime points there (and HydraConfig
    is set, so `${hydra:...}` resolves); `drop_hydra` removes the `hydra` node, as lab.run's
    job sees its config."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from lab.config.overrides import quote_verbatim
    from lab.config.paths import config_dir

    overrides = quote_verbatim(overrides)  # as lab.run quotes its command line (a formula, a path with '=')
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
    if drop_hydra:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg
