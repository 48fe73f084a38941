"""Fit, then test the best checkpoint, and write the run folder's files: one job of lab.run.

The flow: the composed config (lab.config) -> the datamodule, model, task and Trainer
(lab.build) -> `Trainer.fit` and `Trainer.test` as Lightning ships them -> config.yaml,
metrics.json and the HParams entry in the run folder (lab.runs). Resuming and sweep
reruns (lab.train.resume) pick the folder and the checkpoint before anything is built.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from lab.runs import folder
from lab.train import resume

if TYPE_CHECKING:
    import lightning as L


def train(cfg: DictConfig, callbacks: Sequence[L.Callback] = ()) -> dict[str, float]:
    """Run one job from a composed config; returns the metrics written to metrics.json.

    `callbacks` join the config's (for code that drives a run: bench/ times fits with one).
    With `resume=<run>` (or a resume_sweep job whose folder holds a checkpoint) the run's saved
    config is used and fitting continues from its last.ckpt; a resume_sweep job whose folder
    holds metrics.json is skipped and returns them."""
    import warnings

    from lab.build import as_float, build_parts, build_trainer
    from lab.runs.checkpoints import init_weights, read_checkpoint
    from lab.runs.hparams import collect_hparams, write_hparams
    from lab.train.distributed import is_rank_zero
    from lab.utils.console import console, print_config_tree, print_results

    # Lightning 2.6 on torch 2.14 warns about its own pytree call on every batch transfer.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    run_dir = Path(cfg.paths.output_dir)
    overrides, choices = hydra_overrides()
    sweep = cfg.get("resume_sweep") or os.environ.get(resume.SWEEP_ENV)
    rerun = False  # a job run again in a folder an earlier attempt wrote to
    if sweep and not cfg.get("resume"):
        state = resume.sweep_state(run_dir)
        if state == "done":
            console.print(f"{run_dir}: skipped: done (metrics.json is there)", highlight=False, soft_wrap=True)
            return folder.read_metrics(run_dir)
        if state == "checkpoint":
            cfg = cfg.copy()
            cfg.resume = str(run_dir)
        else:
            rerun = any(run_dir.glob("events.out.tfevents.*")) or (run_dir / folder.ERROR).exists()
    ckpt_path, purge_step = None, None
    if cfg.get("resume"):
        cfg = resume.resumed_config(cfg, overrides)
        run_dir = Path(cfg.resume)
        ckpt_path = resume.last_checkpoint(run_dir)
        epoch, purge_step = resume.checkpoint_position(read_checkpoint(ckpt_path, "resume"))
        overrides, choices = resume.saved_hydra(run_dir)
        console.print(f"resuming {run_dir} from {folder.LAST} (saved after epoch {epoch}, step {purge_step})",
                      highlight=False, soft_wrap=True)
        purge_step += 1
    elif rerun:
        purge_step = 0  # the failed attempt's TensorBoard points are dropped
    if purge_step is not None:
        purge_tensorboard_from(cfg, purge_step)
    from lab.config.checks import check_config

    check_config(cfg)  # numbers that cannot work fail here, before data, model or files
    run_dir.mkdir(parents=True, exist_ok=True)
    # Under DDP every rank runs this job; only rank 0 prints and writes the run's files.
    rank_zero = is_rank_zero()
    if rank_zero:
        from lab.runs.provenance import write_provenance

        write_provenance(run_dir)  # before anything is built: a run that fails from here on still has it
        print_config_tree(cfg)

    parts = build_parts(cfg)
    datamodule, task = parts.datamodule, parts.task
    if cfg.get("init_from") and ckpt_path is None:
        # Weights only: the optimizer, the schedule and the epoch count start afresh.
        source = init_weights(task, cfg.init_from)
        console.print(f"initialised the weights from {source} (optimizer state not loaded)", highlight=False,
                      soft_wrap=True)
    trainer: L.Trainer = build_trainer(cfg, callbacks=callbacks)

    # Everything is built and checked: only now write into the run folder.
    if rank_zero:
        if ckpt_path is not None or rerun:
            record = resume.record_folder(run_dir)
            resume.archive_previous(run_dir, record)
            # Hydra's copy there is a fresh composition; the config this launch really uses replaces it.
            (record / folder.CONFIG).write_text(OmegaConf.to_yaml(cfg))
        (run_dir / folder.CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        if hasattr(datamodule, "save_artifacts"):
            datamodule.save_artifacts(run_dir)

    start = time.perf_counter()
    # weights_only: a checkpoint is data; lab's hold only tensors and plain containers.
    trainer.fit(task, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    if ckpt_path is not None and not any(k.startswith("val/") for k in trainer.callback_metrics):
        # Stopped after its last epoch's checkpoint (e.g. while testing): no epoch was left to run,
        # so the final val metrics come from validating the last weights once more.
        trainer.validate(task, datamodule=datamodule, verbose=False)
    metrics: dict[str, Any] = {
        k: as_float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))
    }
    checkpoint = trainer.checkpoint_callback
    best = getattr(checkpoint, "best_model_path", "") if checkpoint else ""
    if cfg.get("test", True):
        trainer.test(task, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True)
        metrics.update({k: as_float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    metrics["wall_time_s"] = round(time.perf_counter() - start, 3)
    # A task whose epoch is not a Lightning epoch (regression: one full-batch step) counts its own.
    metrics["epochs"] = int(getattr(task, "epochs_completed", trainer.current_epoch))
    metrics["seed"] = int(cfg.seed)
    if getattr(task, "best_epoch", None) is not None:
        metrics["best_epoch"] = int(task.best_epoch)

    if trainer.is_global_zero:
        if not trainer.fast_dev_run:
            folder.write_metrics(run_dir, metrics)
            params = collect_hparams(cfg, overrides, choices)
            write_hparams(trainer.loggers, params, [k for k in metrics if k.startswith(("val/", "test/"))])
        print_results({k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))} | {
            "epochs": metrics["epochs"], "wall_time_s": metrics["wall_time_s"]}, str(run_dir))
    return metrics


def hydra_overrides() -> tuple[list[str], dict[str, Any]]:
    """This job's command-line overrides (minus resume keys) and group choices, for the HParams entry."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [], {}
    hydra_cfg = HydraConfig.get()
    overrides = [str(o) for o in hydra_cfg.overrides.task if not str(o).startswith(("resume=", "resume_sweep="))]
    return overrides, dict(hydra_cfg.runtime.choices)


def purge_tensorboard_from(cfg: DictConfig, step: int) -> None:
    """TensorBoard loggers start their new event file with purge_step: points an interrupted process logged at
    or after `step` are dropped, so the replayed part of an epoch is not shown twice."""
    for node in (cfg.get("logger") or {}).values():
        if node and str(node.get("_target_", "")).endswith("TensorBoardLogger"):
            OmegaConf.update(node, "purge_step", int(step), force_add=True)


