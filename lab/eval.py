"""Recompute a checkpoint's metrics: `python -m lab.eval ckpt_path=<ckpt> [key=value ...]`.

The model, data and Trainer are rebuilt from the config saved in the checkpoint's run
folder (see lab.train.from_checkpoint), the weights are loaded strictly, and trainer.test (and
trainer.validate with `splits=[val,test]`) runs on the same split with the same
deterministic eval transform as the run's own test, so a run's best checkpoint gives back
its `test/*` metrics. Results go to a new folder, outputs/evals/<time>_<name>/, never into
the training run.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from lab.config.paths import config_dir
from lab.train.evaluate import check_splits, evaluate

OWN_KEYS = ("splits", "name")

HELP = """\
lab.eval: recompute a checkpoint's metrics with the model and data rebuilt from its run's config.

Usage:
  python -m lab.eval ckpt_path=outputs/runs/<run>/checkpoints/<best>.ckpt
  python -m lab.eval ckpt_path=<ckpt> splits=[val,test]          val metrics too
  python -m lab.eval ckpt_path=<ckpt> data.root=/elsewhere data.eval_batch_size=64 trainer=cpu
  python -m lab.eval ckpt_path=<ckpt> run_dir=<run folder>       a checkpoint moved out of its run
  python -m lab.eval ckpt_path=<ckpt> trainer=ddp_cpu            2 processes (trainer=ddp: GPUs); the same metrics
  python -m lab.eval ckpt_path=<ckpt> --cfg job                  print the run config it would use

Every key=value other than ckpt_path, run_dir, splits and name overrides the run's saved config
(<run>/.hydra/config.yaml, else <run>/config.yaml); `group=option` swaps a group (trainer=cpu).
Writes outputs/evals/<time>_<name>/: metrics.json (test/*, val/*, ckpt_path, ckpt_epoch),
config.yaml (the config used), source.yaml (checkpoint, run, overrides), confusion_test.png.
"""


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    from lab.train.from_checkpoint import run_job

    run_job(lambda job, out_dir: evaluate(job, out_dir, splits=cfg.splits))


def _check_own(own: dict[str, Any]) -> None:
    if "splits" in own:
        check_splits(own["splits"])


if __name__ == "__main__":
    from lab.utils.shutdown import skip_final_collection

    skip_final_collection()
    from lab.train.from_checkpoint import launch

    launch("lab.eval", OWN_KEYS, HELP, main, check=_check_own)
    sys.exit(0)
