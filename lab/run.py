"""Train, then test the best checkpoint: `python -m lab.run [overrides]`.

The entry point only: the command line is checked and rewritten (lab.config, lab.train.resume),
Hydra composes the config, and lab.train.fit runs the job. User errors print one line. Heavy
imports (torch, lightning) happen inside functions so `--help` and `--cfg job` stay fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lab.config.overrides import quote_verbatim
from lab.config.paths import config_dir
from lab.train import resume


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; user errors print one line and exit with status 2."""
    from hydra.errors import InstantiationException

    from lab.config.objective import objective_of
    from lab.errors import LabError, ResumeError
    from lab.train.fit import train
    from lab.utils.console import print_error

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
    return objective_of(cfg).value(metrics)  # what Hydra's sweepers (Optuna) optimise


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
    """error.json in the run folder (rank 0 only)."""
    from lab.runs import folder
    from lab.train.distributed import is_rank_zero

    if not is_rank_zero():
        return
    try:
        folder.write_error(Path(cfg.paths.output_dir), message, type(err).__name__)
    except OSError:
        pass


def _prepare_argv(argv: list[str]) -> list[str]:
    """The command line Hydra gets: resume= and resume_sweep= rewritten (lab.train.resume), sweeps checked.
    User errors raise LabError before Hydra creates any folder."""
    from lab.config.sweep_checks import check_sweep

    argv = quote_verbatim(argv)
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
    from lab.config.completion import handle as completion_script

    script = completion_script(sys.argv[1:])
    if script is not None:
        print(script, end="")
        sys.exit(0)
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        from lab.config.help import help_text

        print(help_text(config_dir()), end="")
        sys.exit(0)
    from lab.errors import LabError

    try:
        sys.argv[1:] = _prepare_argv(sys.argv[1:])
    except LabError as err:
        from lab.utils.console import print_error

        print_error(" ".join(str(err).split()))
        sys.exit(2)
    main()
