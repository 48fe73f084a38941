"""Hydra launcher `hydra/launcher=gpus`: a sweep's jobs in parallel on one machine, each pinned to one GPU.

Why: Hydra's basic launcher runs one job at a time, and joblib or submitit_local run several but
show every job every GPU, so they pile onto device 0. Here devices x jobs_per_device slots run at
once. Each job is a fresh process (`python -m hydra_plugins.lab_launcher._job`) started with
CUDA_VISIBLE_DEVICES=<its device>, so the variable is in place before anything in the job can
start CUDA, and the job sees that one device as cuda:0. A new job starts as soon as a slot frees
(not in waves), on the least busy device, so the devices stay balanced.

Jobs are composed and run exactly as the basic launcher runs them (hydra.core.utils.run_job with
the sweep's config, job id = num = its index): the same folders, `.hydra/` files, callbacks and
JobReturn, sent back to the sweeper (cloudpickle, like Hydra's joblib and submitit launchers).
A failed job comes back FAILED with its exception; a job process that dies (a signal, out of
memory) comes back FAILED with a RuntimeError naming its exit status. Each job's console output
goes to <sweep>/.launcher/<num>.log: parallel progress bars would garble one terminal. The sweep
prints one line as each job starts and ends.

Devices (hydra.launcher.devices):
  null     every visible CUDA device (counted fork-safely, lab.train.device.cuda_device_count);
           none visible: one line saying so and how to choose (no silent CPU fallback)
  N        the first N visible devices; without a GPU, N faked devices 0..N-1 (tests on CPU)
  [0, 2]   these, as indices among the visible devices (as trainer.devices counts them)
A parent CUDA_VISIBLE_DEVICES is honoured: a job gets one entry of the parent's list (an index or
a GPU-UUID), never a raw index that would widen what the parent sees.

No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
sys.modules, where dataclasses cannot resolve string annotations.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

LOG_DIR = ".launcher"  # <sweep>/.launcher/<num>.log: each job's console output
POLL_S = 0.05  # how often the sweep looks for finished jobs


@dataclass
class GpuLauncherConf:
    """hydra.launcher.* of hydra/launcher=gpus (conf/hydra/launcher/gpus.yaml adds lab's comments)."""

    _target_: str = "hydra_plugins.lab_launcher.gpu_launcher.GpuLauncher"
    devices: Any = None  # null: every visible GPU; N: the first N (faked without a GPU); [i, j]: these
    jobs_per_device: int = 1  # k small jobs share each GPU


ConfigStore.instance().store(group="hydra/launcher", name="lab_gpus", node=GpuLauncherConf, provider="lab")


class LauncherConfigError(ValueError):
    """hydra.launcher.* that cannot work here, said in one line."""


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def plan_devices(devices: Any, count: int, spec: str | None) -> list[str]:
    """The CUDA_VISIBLE_DEVICES value of each device the sweep uses.

    `count` devices are visible to this process, `spec` is its own CUDA_VISIBLE_DEVICES (None:
    unset). Where the parent restricts the devices, jobs only ever get entries of its list."""
    restricted = spec is not None
    if spec is None:
        pool = [str(i) for i in range(count)]
    else:
        entries = [e.strip() for e in spec.split(",") if e.strip()]
        # CUDA stops at the first invalid entry: with a GPU, `count` says how many are valid.
        pool = entries[:count] if count else [e for e in entries if e.isdigit() or e.startswith(("GPU-", "MIG-"))]
    where = f"CUDA_VISIBLE_DEVICES={spec}" if restricted else "CUDA_VISIBLE_DEVICES unset"
    if restricted and not pool:
        raise LauncherConfigError(
            f"CUDA_VISIBLE_DEVICES={spec!r} hides every device from this sweep and a job only gets one of its "
            f"entries; unset it or list the devices to use, e.g. CUDA_VISIBLE_DEVICES=0,1")
    if devices is None:
        if not pool:
            raise LauncherConfigError(
                "hydra/launcher=gpus: no CUDA device is visible here; to run devices x jobs_per_device jobs at "
                "once anyway give a count, hydra.launcher.devices=2 (each job then gets CUDA_VISIBLE_DEVICES=0 or "
                "1, e.g. to try a sweep on CPU), or use hydra/launcher=joblib for CPU jobs")
        return pool
    usage = "give a count (devices=2), a list of indices among the visible devices (devices=[0,1]) or null for all"
    if _is_index(devices):
        if devices < 1:
            raise LauncherConfigError(f"hydra.launcher.devices={devices}: {usage}")
        if pool and devices > len(pool):
            raise LauncherConfigError(
                f"hydra.launcher.devices={devices}, but {len(pool)} CUDA device(s) are visible ({where}); give at "
                f"most {len(pool)}, and hydra.launcher.jobs_per_device=k to run k jobs on each")
        return pool[:devices] if pool else [str(i) for i in range(devices)]
    if isinstance(devices, (list, tuple)) and devices:
        chosen: list[str] = []
        for item in devices:
            if isinstance(item, str) and item.strip().isdigit():
                item = int(item.strip())
            if _is_index(item) and item >= 0:
                if pool and item >= len(pool):
                    raise LauncherConfigError(
                        f"hydra.launcher.devices={list(devices)}: index {item}, but {len(pool)} CUDA device(s) are "
                        f"visible ({where}); use indices 0..{len(pool) - 1}")
                entry = pool[item] if pool else str(item)
            elif isinstance(item, str) and item.strip().startswith(("GPU-", "MIG-")):
                entry = item.strip()
                if restricted and entry not in pool:
                    raise LauncherConfigError(
                        f"hydra.launcher.devices: {entry} is not in this process's {where}; name one of its devices")
            else:
                raise LauncherConfigError(f"hydra.launcher.devices={list(devices)}: {item!r} is not a device; {usage}")
            if entry in chosen:
                raise LauncherConfigError(f"hydra.launcher.devices={list(devices)} names {entry} twice; each device "
                                          "once (hydra.launcher.jobs_per_device=k runs k jobs on each)")
            chosen.append(entry)
        return chosen
    raise LauncherConfigError(f"hydra.launcher.devices={devices!r}: {usage}")


def next_device(load: Sequence[int], jobs_per_device: int) -> int | None:
    """The least busy device with a free slot (the lowest index among equals); None when all are full."""
    best = min(range(len(load)), key=lambda d: load[d])
    return best if load[best] < jobs_per_device else None


@dataclass
class _Running:
    num: int
    device: int
    process: subprocess.Popen
    result: Path
    log: Path
    started: float


class GpuLauncher(Launcher):
    """Runs the sweep's jobs devices x jobs_per_device at a time, each in its own process and on its own GPU."""

    def __init__(self, devices: Any = None, jobs_per_device: int = 1) -> None:
        self.devices_setting = OmegaConf.to_container(devices) if OmegaConf.is_config(devices) else devices
        self.jobs_per_device = jobs_per_device
        self.devices: list[str] = []
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context
        try:
            k = self.jobs_per_device
            if not _is_index(k) or k < 1:
                raise LauncherConfigError(f"hydra.launcher.jobs_per_device={k}: give a whole number >= 1 (the jobs "
                                          "that share each GPU)")
            from lab.train.device import cuda_device_count

            self.devices = plan_devices(self.devices_setting, cuda_device_count(),
                                        os.environ.get("CUDA_VISIBLE_DEVICES"))
        except LauncherConfigError as err:
            from lab.utils.console import print_error

            print_error(str(err))
            sys.stdout.flush()
            raise SystemExit(2) from None  # passes Hydra's error wrapper: one line, no traceback

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Run the batch; the JobReturns come back in the batch's order, as from the basic launcher."""
        import cloudpickle

        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        from hydra.core.singleton import Singleton

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / LOG_DIR).mkdir(exist_ok=True)
        k, devices = self.jobs_per_device, self.devices
        log.info(f"Launching {len(job_overrides)} jobs, {k} per device on CUDA_VISIBLE_DEVICES "
                 f"{', '.join(devices)} ({k * len(devices)} at once); each job's output: "
                 f"{sweep_dir / LOG_DIR}/<num>.log")
        for idx, overrides in enumerate(job_overrides):
            log.info(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")

        results: list[JobReturn | None] = [None] * len(job_overrides)
        pending = deque(range(len(job_overrides)))
        running: list[_Running] = []
        load = [0] * len(devices)
        launch_error: BaseException | None = None
        with tempfile.TemporaryDirectory(prefix="lab_launcher_") as tmp, _sigterm_stops_the_sweep():
            common = Path(tmp) / "common.pkl"
            # What every job needs, pickled once: Hydra's context, the sweep's config (its resolver cache
            # too, so the sweep folder and ${now:} agree), the task function and Hydra's singletons.
            common.write_bytes(cloudpickle.dumps((self.hydra_context, self.config, self.task_function,
                                                  Singleton.get_state())))
            try:
                while pending or running:
                    while pending and launch_error is None:
                        device = next_device(load, k)
                        if device is None:
                            break
                        idx = pending.popleft()
                        running.append(self._start(Path(tmp), common, sweep_dir, initial_job_idx + idx,
                                                   job_overrides[idx], device))
                        load[device] += 1
                    done = [r for r in running if r.process.poll() is not None]
                    if not done:
                        time.sleep(POLL_S)
                        continue
                    for job in done:
                        running.remove(job)
                        load[job.device] -= 1
                        ret, error = self._finish(job, job_overrides[job.num - initial_job_idx])
                        results[job.num - initial_job_idx] = ret
                        launch_error = launch_error or error
                    if launch_error is not None:
                        pending.clear()  # as the basic launcher: no new job after a launch error
            finally:
                _stop([job.process for job in running])  # interrupted (Ctrl-C): no job outlives the sweep
        if launch_error is not None:
            raise launch_error
        assert all(isinstance(r, JobReturn) for r in results)
        return results  # type: ignore[return-value]

    def _start(self, tmp: Path, common: Path, sweep_dir: Path, num: int, overrides: Sequence[str],
               device: int) -> _Running:
        """Start job `num` on device `device` in a fresh process that sees only that device."""
        job_file, result = tmp / f"{num}.json", tmp / f"{num}.result.pkl"
        job_file.write_text(json.dumps({"num": num, "overrides": list(overrides), "sys_path": sys.path,
                                        "parent": os.getpid()}))
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = self.devices[device]
        here = str(Path(__file__).resolve().parents[2])  # the folder holding hydra_plugins/lab_launcher
        if here not in _site_dirs():  # a clone: the job must find this plugin wherever it starts
            env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        log_file = sweep_dir / LOG_DIR / f"{num}.log"
        with open(log_file, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "hydra_plugins.lab_launcher._job", str(common), str(job_file), str(result)],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        log.info(f"#{num} started: CUDA_VISIBLE_DEVICES={self.devices[device]}")
        return _Running(num, device, process, result, log_file, time.monotonic())

    def _finish(self, job: _Running, overrides: Sequence[str]) -> tuple[JobReturn, BaseException | None]:
        """The job's JobReturn (FAILED with a RuntimeError when its process died without one), and the
        error that stopped the launch itself (a job Hydra could not even compose), if any."""
        import pickle

        seconds = time.monotonic() - job.started
        outcome: Any = None
        if job.result.is_file():
            try:
                outcome = pickle.loads(job.result.read_bytes())
            except Exception as err:  # noqa: BLE001 - reported as the job's failure below
                outcome = ("died", f"its result could not be read ({type(err).__name__}: {err})")
        code = job.process.returncode
        if outcome is None:
            outcome = ("died", f"its process {_how_it_ended(code)} before returning")
        if outcome[0] == "launch_error":
            log.error(f"#{job.num} could not start: {outcome[1]}; output: {job.log}")
            ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
            ret.return_value = outcome[1]
            return ret, outcome[1]
        if outcome[0] == "died":
            message = f"job {job.num} ({' '.join(filter_overrides(overrides))}): {outcome[1]}; output: {job.log}"
            ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
            ret.return_value = RuntimeError(message)
        else:
            _, ret, message = outcome
        where = f"device {self.devices[job.device]}"
        if message is None:
            value = ret.return_value
            shown = f"{value:.6g}" if isinstance(value, float) else repr(value)[:80]
            log.info(f"#{job.num} done in {seconds:.0f} s ({where}), returned {shown}")
        else:
            log.info(f"#{job.num} failed in {seconds:.0f} s ({where}): {message[:300]}; output: {job.log}")
        return ret, None


def _site_dirs() -> set[str]:
    """site-packages folders: every Python finds them, and on PYTHONPATH they would come before the
    standard library."""
    import site

    return {str(Path(p).resolve()) for p in [*site.getsitepackages(), site.getusersitepackages()]}


@contextmanager
def _sigterm_stops_the_sweep() -> Iterator[None]:
    """SIGTERM (`kill`, a scheduler's time limit) raises KeyboardInterrupt while jobs run, so the launch's
    cleanup ends them; Python's default would exit at once and leave them running."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _how_it_ended(code: int) -> str:
    """`was killed by SIGKILL (out of memory?)` or `exited with status 3`."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"was killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")


def _stop(processes: list[subprocess.Popen]) -> None:
    """End job processes that still run: SIGTERM to all, then SIGKILL to those left after 10 s."""
    alive = [p for p in processes if p.poll() is None]
    for process in alive:
        process.terminate()
    deadline = time.monotonic() + 10
    for process in alive:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
