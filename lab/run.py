"""Train, then test the best checkpoint: `python -m lab.run [overrides]`.

Composes conf/config.yaml with the command-line overrides, builds the datamodule,
model, task, callbacks, loggers and Trainer from it, fits, tests the best
checkpoint, and writes metrics.json into the run folder. Heavy imports (torch,
lightning) happen inside functions so `--help` and `--cfg job` stay fast.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from lab.paths import config_dir


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one job from a composed config; returns the metrics written to metrics.json."""
    import warnings

    import lightning as L
    from hydra.core.hydra_config import HydraConfig

    from lab.build import as_float, build_parts, build_trainer
    from lab.checkpoints import init_weights
    from lab.console import console, print_config_tree, print_results
    from lab.hparams import collect_hparams, write_hparams
    from lab.utils.io import write_json

    # Lightning 2.6 on torch 2.14 warns about its own pytree call on every batch transfer.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    print_config_tree(cfg)

    parts = build_parts(cfg)
    datamodule, task = parts.datamodule, parts.task
    if cfg.get("init_from"):
        # Weights only: the optimizer, the schedule and the epoch count start afresh.
        source = init_weights(task, cfg.init_from)
        console.print(f"initialised the weights from {source} (optimizer state not loaded)", highlight=False,
                      soft_wrap=True)
    trainer: L.Trainer = build_trainer(cfg)

    # Everything is built and checked: only now write into the run folder.
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if hasattr(datamodule, "save_artifacts"):
        datamodule.save_artifacts(run_dir)

    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule)
    metrics: dict[str, Any] = {
        k: as_float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))
    }
    checkpoint = trainer.checkpoint_callback
    best = getattr(checkpoint, "best_model_path", "") if checkpoint else ""
    if cfg.get("test", True):
        trainer.test(task, datamodule=datamodule, ckpt_path=best or None, verbose=False)
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
            hydra_cfg = HydraConfig.get()
            params = collect_hparams(cfg, list(hydra_cfg.overrides.task), dict(hydra_cfg.runtime.choices))
            write_hparams(trainer.loggers, params, [k for k in metrics if k.startswith(("val/", "test/"))])
        print_results({k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))} | {
            "epochs": metrics["epochs"], "wall_time_s": metrics["wall_time_s"]}, str(run_dir))
    return metrics


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
    from lab.errors import LabError

    try:
        metrics = train(cfg)
    except (LabError, InstantiationException, ValueError) as err:
        message = user_error(err)
        print_error(message)
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
    """error.json in the run folder: {"status": "failed", "error": <one line>, "type": <class>}."""
    from lab.utils.io import write_json

    try:
        write_json(Path(cfg.paths.output_dir) / "error.json",
                   {"status": "failed", "error": message, "type": type(err).__name__})
    except OSError:
        pass


if __name__ == "__main__":
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        from lab.cli_help import help_text

        print(help_text(config_dir()), end="")
        sys.exit(0)
    sys.argv[1:] = _quote_formulas(sys.argv[1:])
    from lab.errors import LabError
    from lab.sweeps import check_sweep

    try:
        check_sweep(sys.argv[1:], config_dir())
    except LabError as err:
        from lab.console import print_error

        print_error(str(err))
        sys.exit(2)
    main()
