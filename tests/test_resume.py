"""resume=<run dir> and resume_sweep=<sweep dir>: killed runs continue to the same result.

The kill test is the issue's own: a deterministic digits run is SIGKILLed mid-epoch, resumed
with `python -m lab.run resume=<dir>`, and must end with the metrics of an uninterrupted run
of the same config (to 1e-6), in one folder, as one TensorBoard run with each epoch once.
Subprocesses run with one torch thread: on a shared 2-core machine two threads per process
make each step ~15x slower, and the reference runs beside the killed one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

from tests.conftest import QUICK, ROOT, compose, run_cli, run_in_process

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
KILL_ARGS = ["trainer.max_epochs=4", "data.batch_size=16", "seed=3"]
COMPARED = ("val/loss", "val/top1", "val/top5", "val/top1_best", "test/loss", "test/top1", "test/top5")


def _popen(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **ONE_THREAD}
    return subprocess.Popen([sys.executable, "-m", "lab.run", *args], cwd=cwd, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def _checkpoint_epoch(path: Path) -> int | None:
    """The epoch of last.ckpt, or None while it is absent or being written."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - not there yet, or half written
        return None


def _scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tests.test_run import event_data

    return [(s.step, s.value) for s in event_data(run_dir).Scalars(tag)]


def _assert_same_metrics(resumed: dict, reference: dict) -> float:
    worst = 0.0
    for key in COMPARED:
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), (key, resumed[key], reference[key])
        worst = max(worst, abs(resumed[key] - reference[key]))
    assert resumed["epochs"] == reference["epochs"]
    assert resumed["best_epoch"] == reference["best_epoch"]
    return worst


def _kill_mid_epoch(victim: subprocess.Popen, last: Path, timeout: float = 300) -> None:
    """SIGKILL `victim` about 40% into the epoch after its last.ckpt first shows epoch >= 1."""
    seen: dict[int, float] = {}
    stamp, deadline = None, time.time() + timeout
    while time.time() < deadline and victim.poll() is None:
        current = last.stat().st_mtime_ns if last.exists() else None
        if current is not None and current != stamp:
            epoch = _checkpoint_epoch(last)
            if epoch is not None:
                stamp = current
                seen.setdefault(epoch, time.time())
        if seen and max(seen) >= 1:
            epoch = max(seen)
            length = seen[epoch] - seen[epoch - 1] if epoch - 1 in seen else 1.0
            time.sleep(0.4 * length)
            victim.send_signal(signal.SIGKILL)
            return
        time.sleep(0.02)


@pytest.mark.slow  # three lab.run processes: ~100 s on the shared 2-core machine
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    import torch  # noqa: F401 - imported before the runs start, so polling their checkpoints is quick

    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    reference = _popen([*KILL_ARGS, f"hydra.run.dir={ref_dir}"], tmp_path, tmp_path / "reference.log")
    victim = _popen([*KILL_ARGS, f"hydra.run.dir={run_dir}"], tmp_path, tmp_path / "killed.log")
    last = run_dir / "checkpoints" / "last.ckpt"
    try:
        _kill_mid_epoch(victim, last)
        assert victim.wait(timeout=60) == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    finally:
        if victim.poll() is None:
            victim.kill()
    assert not (run_dir / "metrics.json").exists(), "the run finished before it was killed"
    killed_at = _checkpoint_epoch(last)
    assert killed_at in (1, 2, 3), killed_at

    result = run_cli([f"resume={run_dir}"], cwd=tmp_path, env=ONE_THREAD)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"resuming {run_dir} from checkpoints/last.ckpt (saved after epoch {killed_at}" in result.stdout
    assert reference.wait(timeout=600) == 0, (tmp_path / "reference.log").read_text()[-3000:]

    resumed = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads((ref_dir / "metrics.json").read_text())
    _assert_same_metrics(resumed, expected)

    # One run folder, the run's own .hydra/ kept, the resume's copies beside it.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["killed", "reference"]
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == (ref_dir / ".hydra" / "overrides.yaml").read_text()
    record = run_dir / ".hydra" / "resume_1"
    assert f"- resume={run_dir}\n" in (record / "overrides.yaml").read_text()
    assert (record / "previous_config.yaml").is_file()

    # One TensorBoard run: every epoch's val/top1 once, at the uninterrupted run's steps and values.
    val = _scalars(run_dir, "val/top1")
    assert [s for s, _ in val] == [s for s, _ in _scalars(ref_dir, "val/top1")]
    assert [v for _, v in val] == pytest.approx([v for _, v in _scalars(ref_dir, "val/top1")], abs=1e-6)
    assert len(val) == 4
    assert _scalars(run_dir, "test/top1")[-1][1] == pytest.approx(expected["test/top1"], abs=1e-6)


# --- in-process: continuing a run that stopped between epochs ------------------------------
EPOCH_SCHEDULE = [*QUICK[1:], "scheduler=exponential", "scheduler.gamma=0.5", "model.dropout=0.3", "seed=5"]


class CrashAt(Callback):
    """Stops a run with an exception at (epoch, batch): an interruption that keeps the process alive."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise Interrupted(f"interrupted at epoch {self.epoch}, batch {self.batch}")


class Interrupted(RuntimeError):
    pass


def _run(overrides: list[str], run_dir: Path, crash_at: tuple[int, int] | None = None) -> dict:
    """lab.run's job in this process, with the .hydra/ files Hydra would write first; `crash_at`
    adds CrashAt to the job (not to the saved config, so a resume runs without it)."""
    from omegaconf import OmegaConf, open_dict

    from lab.train.fit import train

    cfg = compose(overrides, run_dir)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg.hydra.overrides.task, run_dir / ".hydra" / "overrides.yaml")
    with open_dict(cfg):
        hydra = cfg.pop("hydra")
    if not any(o.startswith("resume=") for o in overrides):
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create({"hydra": hydra}), run_dir / ".hydra" / "hydra.yaml", resolve=False)
    if crash_at is not None:
        with open_dict(cfg):
            cfg.callbacks.crash = {"_target_": f"{__name__}.CrashAt", "epoch": crash_at[0], "batch": crash_at[1]}
    return train(cfg)


def _resume_in_process(run_dir: Path, extra: list[str] = ()) -> dict:
    """What `python -m lab.run resume=<run_dir> [extra]` runs, in this process."""
    return _run([f"resume={run_dir}", *extra], run_dir)


MID_EPOCH = ["trainer.max_epochs=3", "trainer.limit_train_batches=6", "trainer.limit_val_batches=2",
             "trainer.limit_test_batches=2", "data.batch_size=32", "model.dropout=0.3", "data.augment.hflip=true",
             "data.augment.crop_padding=1", "seed=9"]


def _event_steps(run_dir: Path) -> list[tuple[int, str]]:
    """(step, what) of every event, file by file in write order: 'purge' for a purge marker."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    events = []
    for file in sorted(run_dir.glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, p.name)):
        for event in EventFileLoader(str(file)).Load():
            if event.HasField("session_log"):
                events.append((event.step, "purge"))
            events.extend((event.step, value.tag) for value in event.summary.value)
    return events


def test_interrupted_mid_epoch_then_resumed_matches_an_uninterrupted_run(tmp_path):
    """The default tier's kill test: an exception stops epoch 2 at batch 3 (dropout, flips and
    crops in play); resumed from the epoch-1 checkpoint, the run ends as if never stopped."""
    straight = _run(MID_EPOCH, tmp_path / "straight")
    with pytest.raises(Interrupted):
        _run(MID_EPOCH, tmp_path / "stopped", crash_at=(2, 3))
    assert not (tmp_path / "stopped" / "metrics.json").exists()
    # last.ckpt is refreshed at most every 30 s (callbacks.model_checkpoint.last_every_s), so on
    # these short epochs it is epoch 0's: the resumed run repeats epoch 1 and still matches.
    import torch

    saved = torch.load(tmp_path / "stopped" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    saved_step = saved["global_step"]
    assert saved["epoch"] < 2
    resumed = _resume_in_process(tmp_path / "stopped")
    _assert_same_metrics(resumed, straight)
    val = _scalars(tmp_path / "stopped", "val/top1")
    straight_val = _scalars(tmp_path / "straight", "val/top1")
    assert val == [(s, pytest.approx(v, abs=1e-6)) for s, v in straight_val]
    # The resumed process's first event file starts by purging what came after the checkpoint.
    events = _event_steps(tmp_path / "stopped")
    assert (saved_step + 1, "purge") in events
    after = events[events.index((saved_step + 1, "purge")):]
    assert [step for step, tag in after if tag == "val/top1"] == [s for s, _ in straight_val if s > saved_step]


def test_extending_a_finished_run_equals_training_longer(tmp_path):
    """trainer.max_epochs=3 on a finished 2-epoch run: the same as 3 epochs in one go (epoch-stepped
    schedule, dropout, best-so-far tracking all carried across the restart)."""
    straight = run_in_process([*EPOCH_SCHEDULE, "trainer.max_epochs=3"], tmp_path / "straight")
    _run([*EPOCH_SCHEDULE, "trainer.max_epochs=2"], tmp_path / "extended")
    extended = _resume_in_process(tmp_path / "extended", ["trainer.max_epochs=3"])
    _assert_same_metrics(extended, straight)
    assert extended["train/lr"] == pytest.approx(straight["train/lr"], rel=1e-9)
    record = tmp_path / "extended" / ".hydra" / "resume_1"
    assert json.loads((record / "previous_metrics.json").read_text())["epochs"] == 2
    assert json.loads((tmp_path / "extended" / "metrics.json").read_text())["epochs"] == 3


def test_resume_after_the_last_epoch_validates_and_tests(tmp_path):
    """Killed after the last epoch's checkpoint (while testing): nothing left to fit, same metrics."""
    first = _run([*QUICK, "seed=11"], tmp_path)
    (tmp_path / "metrics.json").unlink()
    again = _resume_in_process(tmp_path)
    _assert_same_metrics(again, first)


# --- command-line errors: one line, nothing written -----------------------------------------
def _error(result) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stdout[-2000:] + result.stderr[-2000:]
    return lines[0]


@pytest.fixture
def killed_in_first_epoch(tmp_path) -> Path:
    """A run folder as a run killed in its first epoch leaves it: Hydra's files, no checkpoint."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("trainer: {max_epochs: 3}\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=0.01\n")
    return run_dir


def test_resume_without_a_checkpoint_says_to_rerun(killed_in_first_epoch, tmp_path):
    line = _error(run_cli([f"resume={killed_in_first_epoch}"], cwd=tmp_path))
    assert "no checkpoints/last.ckpt" in line and "before it finished its first epoch" in line
    assert "python -m lab.run optimizer.lr=0.01" in line
    assert sorted(p.name for p in killed_in_first_epoch.iterdir()) == [".hydra"]


def test_resume_refuses_other_overrides_and_folders_that_are_not_runs(killed_in_first_epoch, tmp_path):
    (killed_in_first_epoch / "checkpoints").mkdir()
    (killed_in_first_epoch / "checkpoints" / "last.ckpt").write_bytes(b"")
    line = _error(run_cli([f"resume={killed_in_first_epoch}", "optimizer.lr=0.1"], cwd=tmp_path))
    assert "optimizer.lr=0.1: resume= keeps the run's config; only trainer.max_epochs=<N>" in line
    assert "not a lab run folder" in _error(run_cli([f"resume={tmp_path}"], cwd=tmp_path))
    assert "no such folder" in _error(run_cli([f"resume={tmp_path}/nowhere"], cwd=tmp_path))
    (killed_in_first_epoch / "metrics.json").write_text('{"epochs": 3}')
    line = _error(run_cli([f"resume={killed_in_first_epoch}"], cwd=tmp_path))
    assert "already finished (3 epochs" in line and "trainer.max_epochs=<more than 3>" in line
    assert not (killed_in_first_epoch / ".hydra" / "resume_1").exists()


def test_resume_sweep_needs_a_sweep_folder_and_minus_m(killed_in_first_epoch, tmp_path):
    line = _error(run_cli(["-m", f"resume_sweep={killed_in_first_epoch}"], cwd=tmp_path))
    assert "not a sweep folder (no multirun.yaml); for one run use resume=" in line
    assert "give -m and the sweep's arguments" in _error(run_cli([f"resume_sweep={tmp_path}"], cwd=tmp_path))


# --- resume_sweep ---------------------------------------------------------------------------
@pytest.mark.slow  # default tier: under ~5 min on 2 cores (make test-all runs it)
def test_resume_sweep_skips_finished_jobs_and_reruns_the_rest(tmp_path):
    from lab.results import load_sweep

    sweep = tmp_path / "sweep"
    args = ["-m", "optimizer.lr=0.1,0.01,0.001", "trainer.max_epochs=1", *QUICK[1:]]
    first = run_cli([*args, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=ONE_THREAD)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    jobs = {p.name: p for p in sweep.iterdir() if p.name.isdigit()}
    assert sorted(jobs) == ["0", "1", "2"]
    kept = {name: (jobs[name] / "metrics.json").stat().st_mtime_ns for name in jobs}
    # Job 1 was "killed during its test" (checkpoint, no metrics); job 2 "in its first epoch" (nothing).
    (jobs["1"] / "metrics.json").unlink()
    (jobs["2"] / "metrics.json").unlink()
    for ckpt in (jobs["2"] / "checkpoints").iterdir():
        ckpt.unlink()
    (jobs["2"] / "error.json").write_text('{"status": "failed", "error": "killed"}')

    # The same sweep with its values in another order: jobs are matched by overrides, not number.
    again = run_cli(["-m", "optimizer.lr=0.001,0.1,0.01", "trainer.max_epochs=1", *QUICK[1:],
                     f"resume_sweep={sweep}"], cwd=tmp_path, env=ONE_THREAD)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("skipped: done") == 1
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1", "2"]
    assert (jobs["0"] / "metrics.json").stat().st_mtime_ns == kept["0"]
    assert "resuming" in again.stdout and str(jobs["1"]) in again.stdout
    for name in jobs:
        assert (jobs[name] / "metrics.json").is_file(), name
    assert not (jobs["2"] / "error.json").exists()
    assert (jobs["2"] / ".hydra" / "resume_1" / "previous_error.json").is_file()
    assert (jobs["0"] / ".hydra" / "overrides.yaml").read_text().count("optimizer.lr=0.1\n") == 1
    assert (sweep / ".hydra" / "resume_1" / "multirun.yaml").is_file()  # the first launch's record

    report = load_sweep(sweep)
    assert [job.status for job in report.jobs] == ["ok", "ok", "ok"], [(j.status, j.detail) for j in report.jobs]
