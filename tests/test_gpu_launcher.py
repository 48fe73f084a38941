"""hydra/launcher=gpus (hydra_plugins/lab_launcher) on CPU with a faked device count.

The sweeps run a small Hydra app on lab's own config (no torch: a job takes seconds, not tens of
seconds): each job records its provenance (CUDA_VISIBLE_DEVICES among it) and waits at a barrier
until `APP_BARRIER` jobs have started, so passing at all proves that many ran at the same time.
A real `python -m lab.run` sweep through the launcher is in the slow tier. Jobs per hour on a
GPU against one job at a time cannot be measured here (no GPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

APP = textwrap.dedent('''
    import json, os, signal, time
    from pathlib import Path

    import hydra

    import lab  # noqa: F401  (lab's resolvers: the run and sweep folders)
    from lab.config.paths import config_dir


    @hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
    def main(cfg):
        from hydra.core.hydra_config import HydraConfig

        from lab.runs.provenance import write_provenance

        out = Path(HydraConfig.get().runtime.output_dir)
        start = time.time()
        write_provenance(out)
        barrier, need = Path(os.environ["APP_BARRIER_DIR"]), int(os.environ.get("APP_BARRIER", "1"))
        (barrier / str(os.getpid())).touch()
        while len(list(barrier.iterdir())) < need:  # all of the first `need` jobs are running at once
            if time.time() - start > 60:
                raise TimeoutError(f"only {len(list(barrier.iterdir()))} of {need} jobs started")
            time.sleep(0.05)
        time.sleep(float(os.environ.get("APP_HOLD", "0")))
        if cfg.seed == 13:
            raise ValueError("seed 13 is unlucky")
        if cfg.seed == 66:
            os.kill(os.getpid(), signal.SIGKILL)
        (out / "job.json").write_text(json.dumps({"start": start, "end": time.time()}))
        return cfg.seed / 10


    if __name__ == "__main__":
        main()
''')

# A sweeper that launches one job per seed and writes what the launcher hands back (status, value) to
# <sweep>/returns.json, in the order it gets them: the JobReturns the Optuna sweeper and lab's sweep
# status read.
RECORDER = textwrap.dedent('''
    import json
    from dataclasses import dataclass, field
    from pathlib import Path
    from typing import Any, List

    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper


    @dataclass
    class RecordingSweeperConf:
        _target_: str = "hydra_plugins.lab_test_recorder.RecordingSweeper"
        seeds: List[Any] = field(default_factory=list)


    ConfigStore.instance().store(group="hydra/sweeper", name="lab_test_recorder", node=RecordingSweeperConf)


    class RecordingSweeper(Sweeper):
        def __init__(self, seeds):
            self.seeds = list(seeds)

        def setup(self, *, hydra_context, task_function, config):
            self.config = config
            self.launcher = Plugins.instance().instantiate_launcher(
                hydra_context=hydra_context, task_function=task_function, config=config)

        def sweep(self, arguments):
            returns = self.launcher.launch([[*arguments, f"seed={s}"] for s in self.seeds], initial_job_idx=0)
            record = []
            for ret in returns:
                try:
                    record.append({"overrides": list(ret.overrides), "status": ret.status.name,
                                   "value": ret.return_value})
                except Exception as err:
                    record.append({"overrides": list(ret.overrides), "status": ret.status.name,
                                   "error": f"{type(err).__name__}: {err}"})
            Path(str(self.config.hydra.sweep.dir), "returns.json").write_text(json.dumps(record))
            return returns
''')


def _app(tmp_path: Path, barrier: int, **extra: str) -> tuple[list[str], dict[str, str]]:
    """The app's command and environment (no CUDA_VISIBLE_DEVICES of the machine running the tests)."""
    (tmp_path / "app.py").write_text(APP)
    plugin = tmp_path / "plugins" / "hydra_plugins" / "lab_test_recorder"
    plugin.mkdir(parents=True, exist_ok=True)
    (plugin / "__init__.py").write_text(RECORDER)
    (tmp_path / "barrier").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path / "plugins"), str(ROOT)]),
               APP_BARRIER_DIR=str(tmp_path / "barrier"), APP_BARRIER=str(barrier), **extra)
    return [sys.executable, str(tmp_path / "app.py")], env


def _run_app(tmp_path: Path, args: list[str], barrier: int) -> subprocess.CompletedProcess:
    command, env = _app(tmp_path, barrier)
    return subprocess.run([*command, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)


def _out(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-4000:] + result.stderr[-4000:]


def _devices(sweep: Path) -> dict[str, str]:
    """job folder -> the CUDA_VISIBLE_DEVICES its provenance.json recorded."""
    return {job.name: json.loads((job / "provenance.json").read_text())["devices"]["CUDA_VISIBLE_DEVICES"]
            for job in sorted(sweep.iterdir()) if job.name.isdigit()}


def test_four_jobs_on_two_faked_devices_one_device_each_balanced_and_at_once(tmp_path):
    """The acceptance check: devices=2 (faked: no GPU here) x 2 jobs per device, 4 jobs. Each job sees
    exactly one device, each device gets 2 jobs, and all 4 ran at the same time (the barrier)."""
    sweep = tmp_path / "sweep"
    start = time.perf_counter()
    result = _run_app(tmp_path, ["-m", "hydra/launcher=gpus", "hydra.launcher.devices=2",
                                 "hydra.launcher.jobs_per_device=2", "seed=1,2,3,4", f"hydra.sweep.dir={sweep}"],
                      barrier=4)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, _out(result)
    devices = _devices(sweep)
    assert sorted(devices) == ["0", "1", "2", "3"], _out(result)  # job folders as with the basic launcher
    assert all(d in ("0", "1") for d in devices.values()), devices  # one device each, nothing else visible
    assert Counter(devices.values()) == {"0": 2, "1": 2}, devices
    spans = [json.loads((sweep / j / "job.json").read_text()) for j in devices]
    assert max(s["start"] for s in spans) < min(s["end"] for s in spans)  # all four overlapped
    for job in devices:
        assert (sweep / ".launcher" / f"{job}.log").is_file()
        assert json.loads((sweep / job / "provenance.json").read_text())["job_num"] == int(job)
    assert "4 at once" in result.stdout and "#3 done in" in result.stdout, result.stdout
    print(f"4 jobs on 2 faked devices x 2: {elapsed:.1f} s")


def test_five_jobs_come_back_to_the_sweeper_in_order_failed_and_killed_ones_failed(tmp_path):
    """5 jobs on 4 slots: the fifth starts when a slot frees, so one device runs 3 and the other 2.
    The sweeper gets one JobReturn per job, in its order: values of the finished ones, FAILED with
    the job's own exception for one that raised, FAILED naming the signal for one whose process died."""
    sweep = tmp_path / "sweep"
    result = _run_app(tmp_path, ["-m", "hydra/sweeper=lab_test_recorder", "hydra.sweeper.seeds=[1,13,3,66,5]",
                                 "hydra/launcher=gpus", "hydra.launcher.devices=2", "hydra.launcher.jobs_per_device=2",
                                 f"hydra.sweep.dir={sweep}"], barrier=4)
    assert result.returncode == 0, _out(result)  # this sweeper only records; the basic one would raise
    returns = json.loads((sweep / "returns.json").read_text())
    assert [r["overrides"] for r in returns] == [[f"seed={s}"] for s in (1, 13, 3, 66, 5)]
    assert [r["status"] for r in returns] == ["COMPLETED", "FAILED", "COMPLETED", "FAILED", "COMPLETED"]
    assert [returns[i]["value"] for i in (0, 2, 4)] == [0.1, 0.3, 0.5]
    assert returns[1]["error"] == "ValueError: seed 13 is unlucky"
    assert returns[3]["error"].startswith("RuntimeError: job 3 (seed=66): its process was killed by SIGKILL")
    assert "ValueError: seed 13 is unlucky" in (sweep / ".launcher" / "1.log").read_text()
    counts = sorted(Counter(_devices(sweep).values()).values())
    assert counts == [2, 3], _devices(sweep)


def test_no_job_outlives_a_killed_sweep(tmp_path):
    """The sweep's process killed with SIGKILL (it cannot stop its jobs then): each job notices that its
    parent is gone and ends within seconds."""
    command, env = _app(tmp_path, barrier=2, APP_HOLD="120")
    sweep = subprocess.Popen([*command, "-m", "hydra/launcher=gpus", "hydra.launcher.devices=2", "seed=1,2",
                              f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    barrier = tmp_path / "barrier"
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    jobs = [int(p.name) for p in barrier.iterdir()]
    assert len(jobs) == 2, "the jobs did not start"
    sweep.kill()
    sweep.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in jobs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in jobs)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")  # a zombie waiting for its new parent to reap it is gone too
    return not (state.is_file() and state.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.slow  # the default tier is at its 5-minute budget (make test-all runs it)
def test_a_setting_that_cannot_work_stops_the_sweep_with_one_line(tmp_path):
    result = run_cli(["-m", "hydra/launcher=gpus", "hydra.launcher.jobs_per_device=0", "seed=1,2",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path)
    assert result.returncode == 2, _out(result)
    lines = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert lines == ["error: hydra.launcher.jobs_per_device=0: give a whole number >= 1 (the jobs that share each "
                     "GPU)"], _out(result)
    assert not list((tmp_path / "sweep").glob("[0-9]*"))  # no job ran


@pytest.mark.parametrize("devices, count, spec, expected", [
    (None, 2, None, ["0", "1"]),
    (None, 2, "3,5", ["3", "5"]),             # a job gets an entry of the parent's list, not a raw index
    (None, 1, "3,-1,5", ["3"]),                # CUDA stops at the first invalid entry
    (1, 2, "3,5", ["3"]),
    ([1], 2, "3,5", ["5"]),                    # an index among the visible devices, as trainer.devices counts
    (2, 0, None, ["0", "1"]),                  # faked: no GPU
    (3, 0, "4,6,7", ["4", "6", "7"]),          # faked, within the parent's list
    ([0, "GPU-ab12"], 2, None, ["0", "GPU-ab12"]),
    (["GPU-ab12"], 2, "GPU-ab12,GPU-cd34", ["GPU-ab12"]),
], ids=["all", "parent_list", "parent_list_cut", "count_of_parent", "index_of_parent", "faked", "faked_in_parent",
        "uuid", "uuid_of_parent"])
def test_devices_each_job_may_see(devices, count, spec, expected):
    from hydra_plugins.lab_launcher.gpu_launcher import plan_devices

    assert plan_devices(devices, count, spec) == expected


@pytest.mark.parametrize("devices, count, spec, message", [
    (None, 0, None, "hydra/launcher=gpus: no CUDA device is visible here; to run devices x jobs_per_device jobs at "
                    "once anyway give a count, hydra.launcher.devices=2"),
    (3, 2, None, "hydra.launcher.devices=3, but 2 CUDA device(s) are visible (CUDA_VISIBLE_DEVICES unset); give "
                 "at most 2"),
    ([0, 4], 2, "1,2", "hydra.launcher.devices=[0, 4]: index 4, but 2 CUDA device(s) are visible "
                       "(CUDA_VISIBLE_DEVICES=1,2); use indices 0..1"),
    (2, 0, "", "CUDA_VISIBLE_DEVICES='' hides every device from this sweep"),
    ([0, 0], 2, None, "hydra.launcher.devices=[0, 0] names 0 twice"),
    (0, 2, None, "hydra.launcher.devices=0: give a count (devices=2)"),
    ("all", 2, None, "hydra.launcher.devices='all': give a count"),
    (["GPU-ff"], 2, "GPU-ab12,GPU-cd34", "hydra.launcher.devices: GPU-ff is not in this process's "
                                        "CUDA_VISIBLE_DEVICES=GPU-ab12,GPU-cd34"),
], ids=["no_gpu", "more_than_visible", "index_past_parent", "hidden", "twice", "zero", "word", "uuid_elsewhere"])
def test_devices_that_cannot_work_say_why_in_one_line(devices, count, spec, message):
    from hydra_plugins.lab_launcher.gpu_launcher import LauncherConfigError, plan_devices

    with pytest.raises(LauncherConfigError) as err:
        plan_devices(devices, count, spec)
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)


def test_the_next_job_goes_to_the_least_busy_device():
    from hydra_plugins.lab_launcher.gpu_launcher import next_device

    assert next_device([0, 0], 2) == 0
    assert next_device([1, 0], 2) == 1
    assert next_device([1, 1, 0], 1) == 2
    assert next_device([2, 2], 2) is None
    load, order = [0, 0, 0], []
    for _ in range(6):  # filling 3 devices x 2 slots alternates over the devices
        device = next_device(load, 2)
        order.append(device)
        load[device] += 1
    assert order == [0, 1, 2, 0, 1, 2] and next_device(load, 2) is None


@pytest.mark.slow  # 4 jobs each importing torch and Lightning: 40-75 s on 2 cores
def test_lab_run_sweep_on_two_faked_devices(tmp_path):
    """`python -m lab.run -m hydra/launcher=gpus` as a user types it: each job trains in its own process,
    records its one device in provenance.json, and the devices are balanced."""
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    result = subprocess.run(
        [sys.executable, "-m", "lab.run", "-m", "hydra/launcher=gpus", "hydra.launcher.devices=2",
         "hydra.launcher.jobs_per_device=2", "seed=1,2,3,4", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0",
         f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, _out(result)
    devices = _devices(sweep)
    assert Counter(devices.values()) == {"0": 2, "1": 2}, devices
    for job in devices:
        assert 0.0 <= json.loads((sweep / job / "metrics.json").read_text())["test/top1"] <= 1.0
    assert (sweep / "multirun.yaml").is_file()
