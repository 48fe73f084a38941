"""provenance.json: what a run ran, so a number in a table can be traced to its code and packages.

Written by rank 0 at the start of lab.train.fit.train, before the data and model are built, so a
run that fails later has it too. It records the git commit of lab's checkout, whether the tree was
dirty with a hash of the change (`git diff HEAD` plus the names of untracked files), the versions of
Python and the packages a result depends on, the host, the device names, CUDA_VISIBLE_DEVICES, the
command line and the job's overrides. A resumed or rerun run keeps the earlier launches' records
under "previous" (newest first).

Cheap and never fatal: git runs with a timeout and without taking git's index lock (ten runs started
at once do not trip over each other or over the user's git), versions come from package metadata,
and anything that cannot be found is said in the file instead of stopping the run. When lab is an
installed package rather than a git checkout, the file says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab.runs.folder import PROVENANCE

PACKAGES = ("torch", "torchvision", "lightning", "hydra-core", "omegaconf", "torchmetrics", "lab")
GIT_TIMEOUT_S = 5.0  # per git call; a typical call takes a few ms
MAX_LISTED = 50  # changed and untracked paths listed in the file (the hash covers all of them)


def _git(repo: Path, *args: str) -> bytes:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=GIT_TIMEOUT_S, env=env,
                          check=True, stdin=subprocess.DEVNULL).stdout


def git_state(package_dir: Path | None = None) -> dict[str, Any]:
    """The commit of lab's checkout, whether it is dirty, and a sha256 of the change; `available: false`
    and the reason when there is no checkout (an installed lab, no git, a timeout)."""
    package_dir = Path(package_dir or Path(__file__).resolve().parents[1])
    if {"site-packages", "dist-packages"} & set(package_dir.parts):
        return {"available": False, "reason": f"lab is an installed package ({package_dir}), not a git checkout: "
                                              "no commit to record"}
    try:
        top, commit, branch = _git(package_dir.parent, "rev-parse", "--show-toplevel", "HEAD", "--abbrev-ref",
                                   "HEAD").decode().splitlines()[:3]
        status = _git(package_dir.parent, "status", "--porcelain=v1", "-z", "--no-renames",
                      "--untracked-files=normal").split(b"\0")
        changed = sorted({e[3:].decode(errors="replace") for e in status if len(e) > 3 and not e.startswith(b"??")})
        untracked = sorted(e[3:].decode(errors="replace") for e in status if e.startswith(b"?? "))
        digest = None
        if changed or untracked:
            diff = _git(package_dir.parent, "diff", "HEAD", "--binary", "--no-ext-diff", "--no-textconv", "--no-color")
            digest = hashlib.sha256(diff + b"\0untracked\0" + "\n".join(untracked).encode()).hexdigest()
    except FileNotFoundError:
        return {"available": False, "reason": "git is not installed"}
    except subprocess.TimeoutExpired:
        return {"available": False, "reason": f"git did not answer within {GIT_TIMEOUT_S:g} s"}
    except subprocess.CalledProcessError as err:
        reason = " ".join(err.stderr.decode(errors="replace").split()) or f"git exited with status {err.returncode}"
        return {"available": False, "reason": f"{package_dir.parent} is not a usable git checkout: {reason}"}
    except ValueError:  # fewer than three words: no commit yet
        return {"available": False, "reason": f"{package_dir.parent}: the repository has no commit yet"}
    return {"available": True, "root": top, "commit": commit, "branch": branch, "dirty": bool(changed or untracked),
            "diff_sha256": digest, "changed": changed[:MAX_LISTED], "changed_count": len(changed),
            "untracked": untracked[:MAX_LISTED], "untracked_count": len(untracked)}


def versions() -> dict[str, str]:
    """Python's and each package's version, from the installed metadata (nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": f"{platform.python_version()} ({platform.python_implementation()})"}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    torch = sys.modules.get("torch")  # its CUDA build, when the run has loaded torch already
    if torch is not None and getattr(getattr(torch, "version", None), "cuda", None):
        found["torch_cuda"] = str(torch.version.cuda)
    return found


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, platform elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def devices() -> dict[str, Any]:
    """The CUDA devices this run sees (lab.train.device.describe), the CPU, and CUDA_VISIBLE_DEVICES."""
    try:
        from lab.train.device import describe

        cuda = describe()
    except Exception as err:  # noqa: BLE001 - recorded, never fatal
        cuda = f"unknown ({type(err).__name__}: {err})"
    return {"cuda": cuda, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _job() -> dict[str, Any]:
    """This job's Hydra overrides and number (a sweep's job runs in a launcher's process, whose own
    command line does not say which job it is)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return {}
        hydra = HydraConfig.get()
        from omegaconf import OmegaConf

        return {"overrides": [str(o) for o in hydra.overrides.task], "mode": str(hydra.mode),
                "job_num": OmegaConf.select(hydra, "job.num", default=None)}
    except Exception:  # noqa: BLE001 - outside a Hydra job
        return {}


def collect() -> dict[str, Any]:
    """The record for this process's run."""
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": git_state(),
        "versions": versions(),
        "host": socket.gethostname(),
        "devices": devices(),
        "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
        "cwd": os.getcwd(),
        "pid": os.getpid(),
        **_job(),
    }


def write_provenance(run_dir: str | os.PathLike) -> Path | None:
    """<run>/provenance.json (earlier launches of the same folder kept under "previous"); None, with one
    note on the console, when it cannot be written: provenance never stops a run."""
    from lab.utils.io import atomic_write_text

    path = Path(run_dir) / PROVENANCE
    try:
        record = collect()
        try:
            earlier = json.loads(path.read_text())
        except (OSError, ValueError):
            earlier = None
        if isinstance(earlier, dict):
            record["previous"] = [{k: v for k, v in earlier.items() if k != "previous"},
                                  *(earlier.get("previous") or [])]
        atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
        return path
    except Exception as err:  # noqa: BLE001 - provenance is a record, not a precondition
        from lab.utils.console import console

        console.print(f"note: {PROVENANCE} not written ({type(err).__name__}: {err})", markup=False,
                      highlight=False, soft_wrap=True)
        return None
