"""How Lightning's DDP launcher starts ranks 1..N-1 under Hydra: the one private Lightning name lab uses.

Lightning's subprocess launcher starts rank > 0 by re-running the command line. Under Hydra it
builds that command with its private `_hydra_subprocess_cmd(local_rank)`: sys.argv plus
`hydra.run.dir=<run.dir>`. In a multirun that re-runs the whole sweep (`-m` is in sys.argv) in
every child, and `run.dir` is neither the job's folder nor stable (its `${now:...}` resolves
again). Lightning has no public option for this command, so `install()` replaces that function,
in the two modules that call it, with `child_command`: this job's own overrides and its real
output folder, so every job leaves exactly one folder.

`check()` runs before any DDP Trainer is built (and in the tests): if a Lightning release
renames or drops the name, lab fails with one line instead of launching the wrong command.
Nothing else in lab replaces or overrides a Lightning, Hydra or torch name.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from types import ModuleType

from lab.config.overrides import quote
from lab.errors import ConfigError

PRIVATE_NAME = "_hydra_subprocess_cmd"
LAUNCHER_MODULES = ("lightning.fabric.strategies.launchers.subprocess_script",
                    "lightning.pytorch.strategies.launchers.subprocess_script")

# Overrides the child command sets itself, or that belong to the sweep rather than to one job.
_CHILD_OWN = ("hydra.run.dir", "hydra.output_subdir", "hydra.job.name", "hydra.mode", "hydra/launcher",
              "hydra/sweeper")
_CHILD_OWN_PREFIXES = ("hydra.run.", "hydra.sweep.", "hydra.launcher.", "hydra.sweeper.")

# lab's Hydra entry points by their primary config.
_ENTRY_BY_CONFIG = {"config": "lab.run", "eval": "lab.eval", "predict": "lab.predict"}

_child_args: list[str] | None = None


def check() -> list[ModuleType]:
    """The modules whose `_hydra_subprocess_cmd` lab replaces; one clear error if one lacks it."""
    import importlib
    import inspect

    import lightning

    modules = []
    for name in LAUNCHER_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"lightning {lightning.__version__}: {name} is gone ({err}); lab's DDP under Hydra "
                              "needs it: install the locked versions (make install)") from err
        func = getattr(module, PRIVATE_NAME, None)
        if not callable(func) or list(inspect.signature(func).parameters)[:1] != ["local_rank"]:
            raise ConfigError(f"lightning {lightning.__version__}: {name}.{PRIVATE_NAME}(local_rank) is gone or "
                              "changed; lab's DDP under Hydra needs it: install the locked versions (make install)")
        modules.append(module)
    return modules


def set_child_args(args: Sequence[str] | None) -> None:
    """The arguments rank > 0 processes get instead of Hydra's task overrides.

    lab.eval and lab.predict read their command line before Hydra starts (Hydra sees only their
    own keys), so their children need the user's whole command line back."""
    global _child_args
    _child_args = None if args is None else [str(a) for a in args]


def _is_child_own(arg: str) -> bool:
    if arg in ("-m", "--multirun"):
        return True
    key = arg.lstrip("+~").split("=", 1)[0]
    return key in _CHILD_OWN or key.startswith(_CHILD_OWN_PREFIXES)


def child_command(local_rank: int) -> tuple[list[str], str]:
    """The command and working directory of rank `local_rank` of this Hydra job.

    `python -m <entry>` + the job's own overrides (a multirun job's, not the sweep's, with its
    hydra.* settings but not the launcher's or sweeper's) +
    `hydra.run.dir=<this job's output folder>`, no `.hydra/` (rank 0 writes it) and a log file
    of its own; never `-m`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    import __main__

    hydra_cfg = HydraConfig.get()
    spec = getattr(__main__, "__spec__", None)
    main_module = spec.name.removesuffix(".__main__") if spec is not None and spec.name else None
    if main_module is None or not main_module.startswith("lab."):
        # A launcher's own process (submitit, joblib) runs the job: name lab's entry from its config.
        main_module = _ENTRY_BY_CONFIG.get(str(hydra_cfg.job.config_name), main_module)
    if main_module:
        command = [sys.executable, "-m", main_module]
    else:
        command = [sys.executable, os.path.abspath(sys.argv[0])]
    if _child_args is not None:
        args = list(_child_args)
    else:  # the job's Hydra settings (hydra.job.chdir=...) too, so the child works where rank 0 does
        args = [str(o) for o in (*hydra_cfg.overrides.hydra, *hydra_cfg.overrides.task)]
    command += [a for a in args if not _is_child_own(a)]
    command += [
        f"hydra.run.dir={quote(str(hydra_cfg.runtime.output_dir))}",
        "hydra.output_subdir=null",
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
    ]
    return command, get_original_cwd()


def install() -> None:
    """Make Lightning's subprocess launcher start rank > 0 as `child_command` (idempotent)."""
    for module in check():
        setattr(module, PRIVATE_NAME, child_command)


