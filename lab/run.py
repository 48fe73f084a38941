"""Train, then test the best checkpoint: `python -m lab.run [overrides]`.

Composes conf/config.yaml with the command-line overrides, builds the datamodule,
model, task, callbacks, loggers and Trainer from it, fits, tests the best
checkpoint, and writes metrics.json into the run folder. Heavy imports (torch,
lightning) happen inside functions so `--help` and `--cfg job` stay fast.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from lab import resume
from lab.paths import config_dir


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one job from a composed config; returns the metrics written to metrics.json.

    With `resume=<run>` (or a resume_sweep job whose folder holds a checkpoint) the run's saved
    config is used and fitting continues from its last.ckpt; a resume_sweep job whose folder
    holds metrics.json is skipped and returns them."""
    import warnings

    import lightning as L

    from lab.build import as_float, build_parts, build_trainer
    from lab.checkpoints import init_weights, read_checkpoint
    from lab.console import console, print_config_tree, print_results
    from lab.distributed import is_rank_zero
    from lab.hparams import collect_hparams, write_hparams
    from lab.utils.io import write_json

    # Lightning 2.6 on torch 2.14 warns about its own pytree call on every batch transfer.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    run_dir = Path(cfg.paths.output_dir)
    overrides, choices = _hydra_overrides()
    sweep = cfg.get("resume_sweep") or os.environ.get(resume.SWEEP_ENV)
    rerun = False  # a job run again in a folder an earlier attempt wrote to
    if sweep and not cfg.get("resume"):
        state = resume.sweep_state(run_dir)
        if state == "done":
            console.print(f"{run_dir}: skipped: done (metrics.json is there)", highlight=False, soft_wrap=True)
            return _read_metrics(run_dir / "metrics.json")
        if state == "checkpoint":
            cfg = cfg.copy()
            cfg.resume = str(run_dir)
        else:
            rerun = any(run_dir.glob("events.out.tfevents.*")) or (run_dir / "error.json").exists()
    ckpt_path, purge_step = None, None
    if cfg.get("resume"):
        cfg = resume.resumed_config(cfg, overrides)
        run_dir = Path(cfg.resume)
        ckpt_path = resume.last_checkpoint(run_dir)
        epoch, purge_step = resume.checkpoint_position(read_checkpoint(ckpt_path, "resume"))
        overrides, choices = resume.saved_hydra(run_dir)
        console.print(f"resuming {run_dir} from {resume.LAST} (saved after epoch {epoch}, step {purge_step})",
                      highlight=False, soft_wrap=True)
        purge_step += 1
    elif rerun:
        purge_step = 0  # the failed attempt's TensorBoard points are dropped
    if purge_step is not None:
        _purge_tensorboard_from(cfg, purge_step)
    from lab.validate import check_config

    check_config(cfg)  # numbers that cannot work fail here, before data, model or files
    run_dir.mkdir(parents=True, exist_ok=True)
    # Under DDP every rank runs this job; only rank 0 prints and writes the run's files.
    rank_zero = is_rank_zero()
    if rank_zero:
        print_config_tree(cfg)

    parts = build_parts(cfg)
    datamodule, task = parts.datamodule, parts.task
    if cfg.get("init_from") and ckpt_path is None:
        # Weights only: the optimizer, the schedule and the epoch count start afresh.
        source = init_weights(task, cfg.init_from)
        console.print(f"initialised the weights from {source} (optimizer state not loaded)", highlight=False,
                      soft_wrap=True)
    trainer: L.Trainer = build_trainer(cfg)

    # Everything is built and checked: only now write into the run folder.
    if rank_zero:
        if ckpt_path is not None or rerun:
            record = resume.record_folder(run_dir)
            resume.archive_previous(run_dir, record)
            # Hydra's copy there is a fresh composition; the config this launch really uses replaces it.
            (record / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
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
            write_json(run_dir / "metrics.json", metrics)
            params = collect_hparams(cfg, overrides, choices)
            write_hparams(trainer.loggers, params, [k for k in metrics if k.startswith(("val/", "test/"))])
        print_results({k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))} | {
            "epochs": metrics["epochs"], "wall_time_s": metrics["wall_time_s"]}, str(run_dir))
    return metrics


def _hydra_overrides() -> tuple[list[str], dict[str, Any]]:
    """This job's command-line overrides (minus resume keys) and group choices, for the HParams entry."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [], {}
    hydra_cfg = HydraConfig.get()
    overrides = [str(o) for o in hydra_cfg.overrides.task if not str(o).startswith(("resume=", "resume_sweep="))]
    return overrides, dict(hydra_cfg.runtime.choices)


def _read_metrics(path: Path) -> dict[str, Any]:
    """A finished job's metrics.json, numbers as floats ("nan" strings back to nan)."""
    import json

    saved = json.loads(path.read_text())
    return {k: float(v) if isinstance(v, (int, float, str)) and _is_number(v) else v for k, v in saved.items()}


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _purge_tensorboard_from(cfg: DictConfig, step: int) -> None:
    """TensorBoard loggers start their new event file with purge_step: points an interrupted process logged at
    or after `step` are dropped, so the replayed part of an epoch is not shown twice."""
    for node in (cfg.get("logger") or {}).values():
        if node and str(node.get("_target_", "")).endswith("TensorBoardLogger"):
            OmegaConf.update(node, "purge_step", int(step), force_add=True)


def _quote_formulas(args: list[str]) -> list[str]:
    """Put `data.expr=<formula>` in quotes for Hydra, which would read `cos(x)` in an unquoted
    value as a call to one of its own override functions; a value already quoted is kept."""
    quoted = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") == "data.expr" and value and not (
            len(value) > 1 and value[0] == value[-1] and value[0] in "'\""
        ):
            arg = key + '="' + value.replace('"', '\\"') + '"'
        quoted.append(arg)
    return quoted


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; user errors print one line and exit with status 2."""
    from hydra.errors import InstantiationException

    from lab.console import print_error
    from lab.errors import LabError, ResumeError

    try:
        metrics = train(cfg)
    except (LabError, InstantiationException, ValueError) as err:
        message = user_error(err)
        print_error(message)
        if not isinstance(err, ResumeError):  # a refused resume leaves the run's folder as it was
            _record_failure(cfg, message, err)
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job and launches the next; the sweep still exits non-zero
        sys.exit(2)
    except Exception as err:  # a crash: leave its first line where lab.report looks, then re-raise
        _record_failure(cfg, " ".join(str(err).split()) or type(err).__name__, err)
        raise
    return metrics.get("val/top1_best")


def user_error(err: BaseException) -> str:
    """The one line a user error prints: lab's own message, or Hydra's instantiation text joined up."""
    from hydra.errors import InstantiationException

    from lab.errors import LabError

    cause = err.__cause__ if isinstance(err, InstantiationException) else err
    if isinstance(cause, (LabError, ValueError)):
        message = str(cause)  # our own messages already name the key and the fix
    else:  # e.g. an unknown argument: Hydra's text names the target and the config key
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return " ".join(message.split())


def _record_failure(cfg: DictConfig, message: str, err: BaseException) -> None:
    """error.json in the run folder: {"status": "failed", "error": <one line>, "type": <class>} (rank 0 only)."""
    from lab.distributed import is_rank_zero
    from lab.utils.io import write_json

    if not is_rank_zero():
        return
    try:
        write_json(Path(cfg.paths.output_dir) / "error.json",
                   {"status": "failed", "error": message, "type": type(err).__name__})
    except OSError:
        pass


def _prepare_argv(argv: list[str]) -> list[str]:
    """The command line Hydra gets: resume= and resume_sweep= rewritten (lab.resume), sweeps checked.
    User errors raise LabError before Hydra creates any folder."""
    from lab.sweeps import check_sweep

    argv = _quote_formulas(argv)
    sweep_folder = None
    if any(a.startswith("resume=") for a in argv) and not any(a.startswith("resume_sweep=") for a in argv):
        return resume.resume_argv(argv)
    if any(a.startswith("resume_sweep=") for a in argv):
        argv, sweep_folder = resume.sweep_argv(argv)
    check_sweep(argv, config_dir())
    if sweep_folder is not None:
        resume.keep_multirun(sweep_folder)
        resume.register_resolvers()
        os.environ[resume.SWEEP_ENV] = str(sweep_folder)
    return argv


if __name__ == "__main__":
    from lab.utils.shutdown import skip_final_collection

    skip_final_collection()
    from lab.completion import handle as completion_script

    script = completion_script(sys.argv[1:])
    if script is not None:
        print(script, end="")
        sys.exit(0)
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        from lab.cli_help import help_text

        print(help_text(config_dir()), end="")
        sys.exit(0)
    from lab.errors import LabError

    try:
        sys.argv[1:] = _prepare_argv(sys.argv[1:])
    except LabError as err:
        from lab.console import print_error

        print_error(" ".join(str(err).split()))
        sys.exit(2)
    main()
