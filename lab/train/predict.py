"""Predicting with a checkpoint (lab.predict): its run rebuilt, the weights loaded strictly,
predictions.csv written for one split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPLITS = ("test", "val", "train")


def check_own(own: dict[str, Any]) -> None:
    """split and top_k, checked before anything is built or written."""
    from lab.errors import ConfigError

    if "split" in own and own["split"] not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {own['split']!r}")
    if "top_k" in own and (isinstance(own["top_k"], bool) or not isinstance(own["top_k"], int) or own["top_k"] < 1):
        raise ConfigError(f"top_k must be a positive integer, got {own['top_k']!r}")


def predict(job, out_dir: Path, split: str = "test", top_k: int = 5) -> Path:
    """Rebuild, load the weights strictly, predict `split`; writes and returns predictions.csv."""
    import warnings

    import torch

    from lab.build import build_parts, build_trainer
    from lab.errors import ConfigError
    from lab.runs.checkpoints import load_weights, read_checkpoint, state_dict_of
    from lab.train.from_checkpoint import describe, write_provenance
    from lab.utils.console import console

    check_own({"split": split, "top_k": top_k})
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    console.print(describe(job), highlight=False, soft_wrap=True)
    parts = build_parts(job.cfg)
    task, datamodule = parts.task, parts.datamodule
    if not hasattr(task, "class_names") or type(task).predict_step is _base_predict_step():
        raise ConfigError(f"lab.predict writes class predictions; this checkpoint's task is {type(task).__name__}, "
                          "which has none (lab.eval computes its metrics)")
    if not hasattr(datamodule, "predict_split"):
        raise ConfigError(f"lab.predict needs an image datamodule that can serve any split; "
                          f"{type(datamodule).__name__} cannot")
    datamodule.predict_split = split
    checkpoint = read_checkpoint(job.ckpt, "ckpt_path")
    load_weights(task, state_dict_of(checkpoint, job.ckpt, "ckpt_path"), job.ckpt, "ckpt_path",
                 hint=f"the model is built from {job.config_file}" + (" with " + " ".join(job.overrides)
                                                                        if job.overrides else ""))
    trainer = build_trainer(job.cfg, fitting=False, loggers=False)

    out_dir.mkdir(parents=True, exist_ok=True)
    if trainer.is_global_zero:
        write_provenance(job, out_dir, {"split": split, "top_k": top_k})
    batches = trainer.predict(task, datamodule=datamodule, return_predictions=True) or []
    probs = torch.cat([b["probs"] for b in batches]).cpu() if batches else torch.empty(0, task.num_classes)
    targets = [b["target"] for b in batches]
    labels = torch.cat(targets).cpu() if targets and all(t is not None for t in targets) else None
    if trainer.world_size > 1:
        # Each process predicted its own contiguous slice of the split: rank order is stored order.
        from lab.train.distributed import gather_shards

        device = trainer.strategy.root_device
        probs = gather_shards(probs, device)
        labels = gather_shards(labels if labels is not None else torch.empty(0, dtype=torch.long), device)
        labels = labels if len(labels) == len(probs) else None
    paths = _sample_paths(datamodule, split, len(probs))
    path = out_dir / "predictions.csv"
    if trainer.is_global_zero:
        write_predictions(path, probs, labels, list(task.class_names), top_k, paths)
        summary = f"wrote {len(probs)} predictions of the {split} split to {path}"
        if labels is not None and len(labels):
            accuracy = (probs.argmax(dim=1) == labels).float().mean().item()
            summary += f" (top-1 {accuracy:.4f})"
        console.print(summary, highlight=False, soft_wrap=True)
    return path


def _base_predict_step():
    from lightning import LightningModule

    return LightningModule.predict_step


def _sample_paths(datamodule: Any, split: str, n: int) -> list[str] | None:
    """Paths of the split's samples when the datamodule offers them (`sample_paths(split)`), in row order."""
    getter = getattr(datamodule, "sample_paths", None)
    paths = getter(split) if callable(getter) else None
    return [str(p) for p in paths] if paths is not None and len(paths) == n else None


def write_predictions(path: Path, probs, labels, class_names: list[str], top_k: int,
                      paths: list[str] | None = None) -> None:
    """predictions.csv: one row per sample (see the module docstring for the columns)."""
    import csv
    import io

    from lab.utils.io import atomic_write_text

    k = min(int(top_k), probs.shape[1])
    # Ties go to the lower class index, as argmax breaks them (topk orders ties arbitrarily): the
    # predicted column is argmax, like the confusion matrix and the task's top-1.
    top_p, top_i = (part[:, :k] for part in probs.sort(dim=1, descending=True, stable=True))
    header = ["index", *(["path"] if paths else []), "label", "predicted", "probability", "correct"]
    for j in range(1, k + 1):
        header += [f"top{j}", f"top{j}_prob"]
    rows = [header]
    for i in range(len(probs)):
        label = int(labels[i]) if labels is not None else None
        predicted = int(top_i[i, 0])
        row = [str(i), *([paths[i]] if paths else []),
               class_names[label] if label is not None else "", class_names[predicted], f"{float(top_p[i, 0]):.6g}",
               "" if label is None else str(int(label == predicted))]
        for j in range(k):
            row += [class_names[int(top_i[i, j])], f"{float(top_p[i, j]):.6g}"]
        rows.append(row)

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    atomic_write_text(path, buffer.getvalue())
