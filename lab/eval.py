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
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from lab.config.paths import config_dir

SPLITS = ("val", "test")
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


def check_splits(splits: Any) -> list[str]:
    """`splits=test`, `splits=[val,test]`: known names, at least one."""
    names = [splits] if isinstance(splits, str) else [str(s) for s in (splits or [])]
    unknown = [s for s in names if s not in SPLITS]
    if unknown or not names:
        from lab.errors import ConfigError

        raise ConfigError(f"splits must list val and/or test, got {names}")
    return list(dict.fromkeys(names))


def evaluate(job, out_dir: Path, splits: Sequence[str] = ("test",)) -> dict[str, Any]:
    """Rebuild, load the weights strictly, validate/test; writes metrics.json and returns it."""
    import warnings

    from lab.build import as_float, build_parts, build_trainer
    from lab.runs.checkpoints import load_weights, read_checkpoint, state_dict_of
    from lab.train.from_checkpoint import describe, write_provenance
    from lab.utils.console import console, print_results
    from lab.utils.io import write_json

    splits = check_splits(splits)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    console.print(describe(job), highlight=False, soft_wrap=True)
    parts = build_parts(job.cfg)
    checkpoint = read_checkpoint(job.ckpt, "ckpt_path")
    load_weights(parts.task, state_dict_of(checkpoint, job.ckpt, "ckpt_path"), job.ckpt, "ckpt_path",
                 hint=f"the model is built from {job.config_file}" + (" with " + " ".join(job.overrides)
                                                                        if job.overrides else ""))
    trainer = build_trainer(job.cfg, fitting=False)

    # Built and loaded: only now write into the output folder.
    out_dir.mkdir(parents=True, exist_ok=True)
    if trainer.is_global_zero:
        write_provenance(job, out_dir, {"splits": splits})
    start = time.perf_counter()
    metrics: dict[str, Any] = {}
    for split in splits:
        run = trainer.validate if split == "val" else trainer.test
        run(parts.task, datamodule=parts.datamodule, verbose=False)
        # val/top1_best is a training-time record, not a property of this checkpoint.
        metrics.update({k: as_float(v) for k, v in trainer.callback_metrics.items()
                        if k.startswith(f"{split}/") and not k.endswith("_best")})
    metrics["wall_time_s"] = round(time.perf_counter() - start, 3)
    if checkpoint.get("epoch") is not None:
        metrics["ckpt_epoch"] = int(checkpoint["epoch"])
    record = {**metrics, "ckpt_path": str(job.ckpt), "run_dir": str(job.run_dir)}
    if trainer.is_global_zero:
        write_json(out_dir / "metrics.json", record)
        print_results({k: v for k, v in metrics.items() if k.startswith(tuple(f"{s}/" for s in SPLITS))}, str(out_dir))
    return record


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
