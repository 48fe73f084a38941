"""DDP decisions every rank must take alike, in real 2-process gloo runs (`trainer=ddp_cpu`):
a nan loss seen on one rank stops every rank with the same error (no rank left waiting in a
collective), and a time-based last.ckpt is saved at the same steps on every rank even when
their clocks disagree (Lightning's ModelCheckpoint broadcasts rank 0's decision).

The task and the callback below are plugged in by `_target_` (tests is importable as `tests`):
the runs are `python -m lab.run`, its ranks > 0 started by Lightning's launcher. A hang fails the
test after TIMEOUT seconds, with every process of the run killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from lab.tasks.classification import ClassificationTask
from tests.conftest import ROOT

TIMEOUT = 120  # a healthy run takes ~15 s; a rank waiting in a collective waits 30 min (gloo's default)
# 8 training batches per rank on the digits, one epoch, no test: a whole run in seconds.
SMALL = ["trainer=ddp_cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=8", "trainer.limit_val_batches=1",
         "trainer.num_sanity_val_steps=0", "test=false", "logger=none"]


class NanOnRankOneTask(ClassificationTask):
    """Lab's classification task whose loss is nan on rank 1 only, at step `nan_step` (+task.nan_step=k)."""

    def __init__(self, *args, nan_step: int = 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.nan_step = int(nan_step)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.global_rank == 1 and self.global_step == self.nan_step:
            return loss * float("nan")
        return loss


class SkewedClock(L.Callback):
    """Rank 1 sleeps `seconds` after every other batch, before ModelCheckpoint (Lightning runs
    checkpoint callbacks last) reads its clock: the ranks' clocks then disagree on whether the
    interval has passed. Each rank writes its clock readings and the steps it saved at."""

    def __init__(self, out: str, seconds: float) -> None:
        self.out, self.seconds = Path(out), float(seconds)
        self.times: list[float] = []
        self.saved: list[int] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.times.append(time.monotonic())  # ModelCheckpoint starts its clock here too

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank == 1 and batch_idx % 2 == 0:
            time.sleep(self.seconds)
        self.times.append(time.monotonic())

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saved.append(trainer.global_step)  # every rank builds each checkpoint; rank 0 writes it

    def on_train_end(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        record = {"times": self.times, "saved": self.saved}
        (self.out / f"clock_rank{trainer.global_rank}.json").write_text(json.dumps(record))


def run_lab(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m lab.run <args>` in its own process group; (result, seconds). All ranks write to
    the same pipes, so the call returns once every rank has exited; a hang is killed and fails."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "LAB_OUTPUT_DIR": str(cwd / "outputs")}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "lab.run", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # rank 0 and the ranks it started
        out, err = proc.communicate()
        pytest.fail(f"hung: the run had not ended after {TIMEOUT} s (rank 0 exit: {proc.returncode}); "
                    f"stdout: {out[-2000:]} stderr: {err[-2000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of the run outlives the test
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - start


def the_run(cwd: Path) -> Path:
    runs = list((cwd / "outputs" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


# --- a nan on one rank stops every rank --------------------------------------------------
# The deferred run is in the slow tier (make test-all): it shares the gather with the per-step run,
# and its cross-rank logic is tested in-process (tests/test_finite_loss.py, ThreadGroup).
@pytest.mark.parametrize("defer, step", [("null", 2), pytest.param("true", 7, marks=pytest.mark.slow)])
def test_a_nan_loss_on_rank_one_stops_both_ranks_with_one_error(tmp_path, defer, step):
    """null: the CPU's per-step check, made collective (one sum all-reduce before each backward);
    true: the accelerators' device flag, gathered at the check points, with the nan at the last
    step before one (the epoch's end, step 7 of 0-7), where only rank 1's flag is set.
    Before the collective verdict rank 1 raised alone and rank 0 crashed in its next collective
    ("Connection closed by peer" on gloo; NCCL waits for its watchdog), exit 1 with a traceback."""
    result, seconds = run_lab([*SMALL, "task._target_=tests.test_ddp_flags.NanOnRankOneTask",
                               f"+task.nan_step={step}", f"callbacks.finite_loss.defer={defer}"], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    run = the_run(tmp_path)
    error = json.loads((run / "error.json").read_text())
    assert error["type"] == "NonFiniteLossError", error
    message = error["error"]
    assert message.startswith(f"non-finite training loss (nan) at step {step} on rank 1 (epoch 0, batch {step}, "), \
        message
    assert "\n" not in message and "lower optimizer.lr" in message
    lines = [line for line in output.splitlines() if "error: non-finite training loss" in line]
    assert len(lines) == 2 and all(line.endswith(message) for line in lines), lines  # each rank, the same line
    assert not (run / "metrics.json").exists() and not (run / "checkpoints" / "last.ckpt").exists()
    print(f"defer={defer}: {seconds:.1f} s")


# --- a time-based last.ckpt: rank 0's clock decides for all ------------------------------
INTERVAL, SKEW = 0.25, 0.4  # seconds; a training step here takes ~0.02 s
CLEAR = 0.02  # a clock reading this far from the interval is a clear decision (ModelCheckpoint reads it a bit later)


def own_clock_elapsed(record: dict, saved: list[int]) -> list[float]:
    """At each batch end, the time since the last save on this rank's own clock (the saves made:
    `saved`, the steps after the batches they followed)."""
    times, last, elapsed = record["times"], record["times"][0], []
    for batch, now in enumerate(times[1:]):
        elapsed.append(now - last)
        if batch + 1 in saved:
            last = now
    return elapsed


@pytest.mark.slow  # 14 s: Lightning's own broadcast; the default tier is at its 5-minute budget
def test_a_time_based_last_ckpt_is_saved_at_the_same_steps_on_both_ranks(tmp_path):
    """The documented override (conf/callbacks/default.yaml) with a 0.25 s interval, rank 1 sleeping
    0.4 s after every other batch: the ranks' own clocks disagree at some steps, yet both save at
    the same steps (Lightning broadcasts rank 0's decision), the run ends, and last.ckpt is there.
    With a ModelCheckpoint subclass that decides on each rank's own clock instead (tried outside
    the repo), this run hangs and fails here."""
    clocks = tmp_path / "clocks"
    result, seconds = run_lab([*SMALL, "callbacks.last_checkpoint.every_n_epochs=null",
                               f"callbacks.last_checkpoint.train_time_interval={{_target_:datetime.timedelta,"
                               f"seconds:{INTERVAL}}}",
                               f"+callbacks.skew={{_target_:tests.test_ddp_flags.SkewedClock,out:'{clocks}',"
                               f"seconds:{SKEW}}}"], tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    records = [json.loads((clocks / f"clock_rank{r}.json").read_text()) for r in (0, 1)]
    saved = records[0]["saved"]  # the steps of every save: last.ckpt's, and the best one's at the epoch's end (8)
    elapsed = [own_clock_elapsed(r, saved) for r in records]
    print(f"{seconds:.1f} s; saved after steps {saved}; own clocks: {[[round(e, 3) for e in r] for r in elapsed]}")
    assert records[1]["saved"] == saved and any(step < 8 for step in saved), records  # mid-epoch, alike
    # Batches 0-6: a save after them can only be last.ckpt's, decided by the clock.
    clear = [b for b in range(7) if all(abs(r[b] - INTERVAL) > CLEAR for r in elapsed)]
    parted = [b for b in clear if (elapsed[0][b] >= INTERVAL) != (elapsed[1][b] >= INTERVAL)]
    assert parted, elapsed  # left to their own clocks, the ranks would have parted ways at these batches
    assert all((elapsed[0][b] >= INTERVAL) == (b + 1 in saved) for b in clear), (elapsed, saved)  # rank 0 decided
    assert (the_run(tmp_path) / "checkpoints" / "last.ckpt").is_file()
