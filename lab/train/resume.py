"""Continuing runs: `resume=<run dir>` and `-m ... resume_sweep=<sweep dir>`.

`python -m lab.run resume=<run>` continues an interrupted run from its
`checkpoints/last.ckpt`, in the same folder, with the run's saved config (its
`.hydra/config.yaml`, not a fresh composition, so later edits of conf/ do not leak in).
Only `trainer.max_epochs=<N>` may be given with it, to train a run further. The command
line is rewritten before Hydra starts (`hydra.run.dir=<run>`), and Hydra's copies of the
new command go to `.hydra/resume_<k>/`, so the run's own `.hydra/` stays as it was.

`python -m lab.run -m <the sweep's arguments> resume_sweep=<sweep>` reruns a sweep in its
folder: each job goes to the folder of the earlier job with the same overrides (whatever
its number), where it is skipped if `metrics.json` is there, resumed from `last.ckpt` if
that is there, and run afresh otherwise; a job no earlier job matches gets a new folder.
`resume_sweep` is taken off the command line (jobs keep exactly their overrides, which
is how they are matched, here and by lab.report) and reaches the jobs as
$LAB_RESUME_SWEEP.

Nothing here imports torch: the command-line checks run before Hydra and stay fast.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lab.config.overrides import key_of as _key
from lab.config.overrides import quote as _quote
from lab.config.overrides import value_of as _value
from lab.errors import ResumeError
from lab.runs.folder import CONFIG, ERROR, HYDRA, HYDRA_CONFIG, LAST, METRICS, MULTIRUN, OVERRIDES

EXTENDABLE = ("trainer.max_epochs",)  # what resume= accepts besides the folder
SWEEP_ENV = "LAB_RESUME_SWEEP"
RECORD_PREFIX = "resume_"  # .hydra/resume_<k>/: Hydra's copies for the k-th continuation
_SKIP_KEYS = ("resume", "resume_sweep")


def next_record(folder: Path) -> str:
    """`.hydra/resume_<k>` with the first k not used yet in `folder`."""
    k = 1
    while (folder / HYDRA / f"{RECORD_PREFIX}{k}").exists():
        k += 1
    return f".hydra/{RECORD_PREFIX}{k}"


def records(folder: Path) -> list[Path]:
    """The run's `.hydra/resume_<k>/` folders, oldest first."""
    found = [p for p in (folder / HYDRA).glob(f"{RECORD_PREFIX}*") if p.name[len(RECORD_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(RECORD_PREFIX):]))


def read_overrides(file: Path) -> list[str]:
    """A Hydra overrides.yaml as a list of strings ([] if unreadable)."""
    try:
        loaded = OmegaConf.load(file)
    except Exception:  # noqa: BLE001 - a damaged file counts as no overrides
        return []
    return [str(o) for o in loaded] if OmegaConf.is_list(loaded) else []


def job_overrides(tokens: Sequence[str]) -> list[str]:
    """A job's identity: its overrides minus resume keys and hydra.*, sorted (argument order does not matter)."""
    return sorted(t for t in tokens if _key(t) not in _SKIP_KEYS and not _key(t).startswith("hydra."))


# --- resume=<run dir> ------------------------------------------------------------------
def run_folder(value: str) -> Path:
    """The folder resume= names, checked to be a lab run; one-line errors otherwise."""
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise ResumeError(f"resume={value}: no such folder; give a run folder, "
                          "e.g. resume=outputs/runs/<date>_<time>_<name>")
    folder = folder.resolve()
    if (folder / MULTIRUN).is_file():
        raise ResumeError(f"resume={value} is a sweep folder; rerun a sweep with "
                          f"python -m lab.run -m <the sweep's arguments> resume_sweep={value}")
    if not (folder / HYDRA / CONFIG).is_file():
        raise ResumeError(f"resume={value} is not a lab run folder (no .hydra/config.yaml); give the folder "
                          "a run wrote, e.g. outputs/runs/<date>_<time>_<name> or a sweep job's <sweep>/<n>")
    return folder


def last_checkpoint(folder: Path, key: str = "resume") -> Path:
    """<run>/checkpoints/last.ckpt, or a one-line error saying why there is none."""
    ckpt = folder / LAST
    if ckpt.is_file():
        return ckpt
    command = " ".join(read_overrides(folder / HYDRA / OVERRIDES))
    raise ResumeError(f"{key}={folder}: no {LAST}: the run stopped before it finished its first epoch, so there is "
                      f"nothing to resume; run it again: python -m lab.run {command}".rstrip())


def _finished_epochs(folder: Path) -> int | None:
    import json

    try:
        return int(json.loads((folder / METRICS).read_text())["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resume_argv(argv: Sequence[str]) -> list[str]:
    """The command line Hydra gets for `resume=<run> [trainer.max_epochs=N]`: the run's folder, a record
    folder for Hydra's copies, and the resume key. Anything else on the line is refused."""
    folder_arg, extend, passed = None, [], []
    for token in argv:
        if token in ("-m", "--multirun"):
            raise ResumeError("resume= continues one run; rerun a sweep with -m <the sweep's arguments> "
                              "resume_sweep=<sweep folder>")
        if token.startswith("resume="):
            folder_arg = _value(token)
        elif "=" in token and _key(token) in EXTENDABLE and not token.startswith(("+", "~")):
            extend.append(token)
        elif _key(token).startswith("hydra."):
            passed.append(token)  # e.g. Lightning's DDP launcher re-running this command line
        else:
            raise ResumeError(f"{token}: resume= keeps the run's config; only trainer.max_epochs=<N> (to train "
                              "longer) may be given with it")
    if not folder_arg:
        raise ResumeError("resume= needs the run folder: python -m lab.run resume=outputs/runs/<date>_<time>_<name>")
    folder = run_folder(folder_arg)
    max_epochs = None
    for token in extend:
        try:
            max_epochs = int(_value(token))
        except ValueError:
            raise ResumeError(f"{token}: trainer.max_epochs must be a whole number of epochs") from None
        if max_epochs <= 0:
            raise ResumeError(f"{token}: trainer.max_epochs must be positive")
    last_checkpoint(folder)
    done = _finished_epochs(folder)
    if done is not None and (max_epochs is None or max_epochs <= done):
        raise ResumeError(f"resume={folder_arg}: the run already finished ({done} epochs, metrics.json); "
                          f"to train it further give trainer.max_epochs=<more than {done}>")
    given = {_key(t) for t in passed}
    ours = [f"{key}={_quote(value)}" for key, value in (("hydra.run.dir", folder),
                                                        ("hydra.output_subdir", next_record(folder)))
            if key not in given]
    return [*ours, *passed, f"resume={_quote(folder)}", *(f"trainer.max_epochs={max_epochs}" for _ in extend[-1:])]


def resumed_config(cfg: DictConfig, current_overrides: Sequence[str] = ()) -> DictConfig:
    """The run's saved config (unresolved `.hydra/config.yaml`) with the latest trainer.max_epochs given to a
    resume of it, for the job Hydra composed with `resume=<run>`."""
    folder = run_folder(str(cfg.resume))
    out = Path(str(cfg.paths.output_dir)).resolve()
    if out != folder:
        raise ResumeError(f"resume={cfg.resume}: the job writes into {out}, not the run's folder; "
                          "start it with python -m lab.run resume=<run folder>")
    saved = OmegaConf.load(folder / HYDRA / CONFIG)
    if not isinstance(saved, DictConfig) or "trainer" not in saved:
        raise ResumeError(f"{folder / '.hydra' / 'config.yaml'} is not a lab run config (no trainer)")
    tokens = [t for record in records(folder) for t in read_overrides(record / OVERRIDES)]
    tokens += list(current_overrides)
    for token in tokens:
        if _key(token) in EXTENDABLE and "=" in token:
            OmegaConf.update(saved, _key(token), int(_value(token)), merge=False)
    saved.resume = str(folder)
    saved.resume_sweep = None
    return saved


def saved_hydra(folder: Path) -> tuple[list[str], dict[str, Any]]:
    """(task overrides, group choices) of the run's first launch, for its HParams entry."""
    try:
        hydra = OmegaConf.load(folder / HYDRA / HYDRA_CONFIG).hydra
        overrides = [str(o) for o in hydra.overrides.task]
        choices = OmegaConf.to_container(hydra.runtime.choices, resolve=False)
    except Exception:  # noqa: BLE001 - an old or damaged hydra.yaml: the parameters come from the config alone
        return [], {}
    return overrides, dict(choices) if isinstance(choices, dict) else {}


def checkpoint_position(ckpt: dict[str, Any]) -> tuple[int, int]:
    """(epoch, logging step) a Lightning checkpoint was saved at. TensorBoard points after that step came
    from the interrupted process after the checkpoint; they are purged when the run continues (the
    epoch's own points sit at step - 1, its validation pictures at step)."""
    epoch = int(ckpt.get("epoch", 0))
    step = int(ckpt.get("global_step", 0))
    try:
        step = int(ckpt["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"])
    except (KeyError, TypeError, ValueError):
        pass
    return epoch, step


def archive_previous(folder: Path, record: Path) -> list[str]:
    """Before a run continues in `folder`: its metrics.json and config.yaml are copied, and an error.json
    of a failed attempt moved (lab.report reads error.json as 'failed'), into the record folder as
    previous_<name>."""
    kept = []
    record.mkdir(parents=True, exist_ok=True)
    for name in (METRICS, CONFIG):
        if (folder / name).is_file():
            shutil.copy2(folder / name, record / f"previous_{name}")
            kept.append(name)
    if (folder / ERROR).is_file():
        os.replace(folder / ERROR, record / "previous_error.json")
        kept.append(ERROR)
    return kept


# --- resume_sweep=<sweep dir> ----------------------------------------------------------
def sweep_folder(value: str) -> Path:
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise ResumeError(f"resume_sweep={value}: no such folder; give a sweep folder, e.g. "
                          "resume_sweep=outputs/multiruns/<date>_<time>_<name>")
    folder = folder.resolve()
    if not (folder / MULTIRUN).is_file():
        hint = f"; for one run use resume={value}" if (folder / HYDRA).is_dir() else ""
        raise ResumeError(f"resume_sweep={value} is not a sweep folder (no multirun.yaml){hint}")
    return folder


def sweep_argv(argv: Sequence[str]) -> tuple[list[str], Path]:
    """The command line Hydra gets for `-m ... resume_sweep=<sweep>`, and the sweep folder (checks only;
    `keep_multirun` saves the sweep's multirun.yaml before Hydra rewrites it)."""
    value = None
    rest: list[str] = []
    for token in argv:
        if token.startswith("resume_sweep="):
            value = _value(token)
        elif token.startswith("resume="):
            raise ResumeError("resume= and resume_sweep= do not go together: resume= continues one run, "
                              "resume_sweep= a whole sweep")
        elif _key(token) in ("hydra.sweep.dir", "hydra.sweep.subdir", "hydra.output_subdir"):
            raise ResumeError(f"{token}: resume_sweep= sets {_key(token)} itself; drop it")
        else:
            rest.append(token)
    if not value:
        raise ResumeError("resume_sweep= needs the sweep folder: resume_sweep=outputs/multiruns/<date>_<time>_<name>")
    if not any(t in ("-m", "--multirun") for t in rest):
        raise ResumeError(f"resume_sweep={value} reruns a sweep: give -m and the sweep's arguments, "
                          f"python -m lab.run -m <the sweep's arguments> resume_sweep={value}")
    folder = sweep_folder(value)
    return [*rest, f"hydra.sweep.dir={_quote(folder)}", "hydra.sweep.subdir=${lab_resume_subdir:}",
            "hydra.output_subdir=${lab_resume_output_subdir:}"], folder


def keep_multirun(folder: Path) -> Path:
    """Copy the sweep's multirun.yaml (Hydra rewrites it for the rerun) to <sweep>/.hydra/resume_<k>/."""
    record = folder / next_record(folder)
    record.mkdir(parents=True)
    shutil.copy2(folder / MULTIRUN, record / MULTIRUN)
    return record


def job_subdir(sweep: Path, overrides: Sequence[str], num: int) -> str:
    """The folder (name under the sweep) for the job with these overrides: an earlier job's with equal
    overrides (one with metrics.json, else last.ckpt, else the lowest number), else its own number when
    free, else one past the highest number there."""
    want = job_overrides(overrides)
    matches, numbers = [], []
    for child in sweep.iterdir() if sweep.is_dir() else []:
        if not child.is_dir() or child.name.startswith("."):
            continue
        if child.name.isdigit():
            numbers.append(int(child.name))
        saved = child / HYDRA / OVERRIDES
        if saved.is_file() and job_overrides(read_overrides(saved)) == want:
            matches.append(child)
    if matches:
        def rank(p: Path) -> tuple:
            return (not (p / METRICS).is_file(), not (p / LAST).is_file(),
                    not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)
        return min(matches, key=rank).name
    if not (sweep / str(num)).exists():
        return str(num)
    return str(max(numbers, default=-1) + 1)


_RESOLVED: dict[tuple, str] = {}  # Hydra may resolve a job's folders more than once: same answer each time


def _subdir_resolver(*, _root_: DictConfig) -> str:
    hydra = _root_.hydra
    sweep, overrides, num = Path(str(hydra.sweep.dir)), list(hydra.overrides.task), int(hydra.job.num)
    key = ("subdir", str(sweep), num, tuple(overrides))
    if key not in _RESOLVED:
        _RESOLVED[key] = job_subdir(sweep, overrides, num)
    return _RESOLVED[key]


def _output_subdir_resolver(*, _root_: DictConfig) -> str:
    out = Path(str(_root_.hydra.runtime.output_dir))
    key = ("output_subdir", str(out))
    if key not in _RESOLVED:
        _RESOLVED[key] = next_record(out) if (out / HYDRA / OVERRIDES).is_file() else HYDRA
    return _RESOLVED[key]


def record_folder(run_dir: Path) -> Path:
    """Where this launch keeps what it replaces in `run_dir`: the .hydra/resume_<k>/ Hydra wrote this
    launch's copies to, or (in-process, or a plain .hydra) the next free one."""
    subdir = _RESOLVED.get(("output_subdir", str(run_dir)))
    if subdir is None:
        try:
            from hydra.core.hydra_config import HydraConfig

            subdir = str(HydraConfig.get().output_subdir or "")
        except Exception:  # noqa: BLE001 - no Hydra job (in-process use)
            subdir = ""
    if subdir.startswith(f".hydra/{RECORD_PREFIX}"):
        return run_dir / subdir
    return run_dir / next_record(run_dir)


def register_resolvers() -> None:
    """The resolvers resume_sweep's hydra.sweep.subdir and hydra.output_subdir use (evaluated per job)."""
    if not OmegaConf.has_resolver("lab_resume_subdir"):
        OmegaConf.register_new_resolver("lab_resume_subdir", _subdir_resolver)
    if not OmegaConf.has_resolver("lab_resume_output_subdir"):
        OmegaConf.register_new_resolver("lab_resume_output_subdir", _output_subdir_resolver)


def sweep_state(folder: Path) -> str:
    """What a resume_sweep job finds in its folder: 'done', 'checkpoint' or 'fresh'."""
    if (folder / METRICS).is_file():
        return "done"
    if (folder / LAST).is_file():
        return "checkpoint"
    return "fresh"
