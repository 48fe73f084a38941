"""Evaluating a checkpoint (lab.eval): its run rebuilt, the weights loaded strictly, val/test run again."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.runs.folder import METRICS

SPLITS = ("val", "test")


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
        write_json(out_dir / METRICS, record)
        print_results({k: v for k, v in metrics.items() if k.startswith(tuple(f"{s}/" for s in SPLITS))}, str(out_dir))
    return record
