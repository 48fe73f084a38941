"""Per-sample predictions of a checkpoint: `python -m lab.predict ckpt_path=<ckpt> [key=value ...]`.

The model and data are rebuilt from the config saved in the checkpoint's run folder
(see lab.train.from_checkpoint), the weights loaded strictly, and trainer.predict runs over
one split (`split=test` by default) in stored order with the deterministic eval
transform. predictions.csv gets one row per sample of the split: its index (and path,
when the datamodule knows paths), true and predicted class, the predicted class's
probability, whether it is right, and the top-k classes with their probabilities.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from lab.config.paths import config_dir
from lab.train.predict import check_own, predict

OWN_KEYS = ("split", "top_k", "name")

HELP = """\
lab.predict: write predictions.csv for a split, with the model and data rebuilt from the checkpoint's run.

Usage:
  python -m lab.predict ckpt_path=outputs/runs/<run>/checkpoints/<best>.ckpt
  python -m lab.predict ckpt_path=<ckpt> split=val top_k=3
  python -m lab.predict ckpt_path=<ckpt> data.root=/elsewhere data.eval_batch_size=64 trainer=cpu
  python -m lab.predict ckpt_path=<ckpt> run_dir=<run folder>    a checkpoint moved out of its run
  python -m lab.predict ckpt_path=<ckpt> trainer=ddp_cpu         2 processes, one complete predictions.csv

Every key=value other than ckpt_path, run_dir, split, top_k and name overrides the run's saved config
(<run>/.hydra/config.yaml, else <run>/config.yaml); `group=option` swaps a group (trainer=cpu).
Writes outputs/predictions/<time>_<name>/predictions.csv, one row per sample of the split:
index[,path],label,predicted,probability,correct,top1,top1_prob,...,topK,topK_prob
(label and correct are empty when the split has no labels), plus config.yaml and source.yaml.
"""


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
def main(cfg: DictConfig) -> None:
    from lab.train.from_checkpoint import run_job

    run_job(lambda job, out_dir: predict(job, out_dir, split=str(cfg.split), top_k=cfg.top_k))


if __name__ == "__main__":
    from lab.utils.shutdown import skip_final_collection

    skip_final_collection()
    from lab.train.from_checkpoint import launch

    launch("lab.predict", OWN_KEYS, HELP, main, check=check_own)
    sys.exit(0)
