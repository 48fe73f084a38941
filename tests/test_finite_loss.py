"""A nan/inf training loss stops the run at once, in one line naming the step."""

from __future__ import annotations

import json
import threading
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from lab.callbacks.finite_loss import FiniteLossCheck
from lab.errors import NonFiniteLossError
from tests.conftest import QUICK, run_cli, run_in_process


def test_huge_learning_rate_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(NonFiniteLossError) as caught:
        run_in_process([*QUICK, "optimizer.lr=1e9"], tmp_path)
    message = str(caught.value)
    assert message.startswith("non-finite training loss (nan) at step ")
    assert "(epoch 0, batch " in message and "lower optimizer.lr" in message
    assert "\n" not in message
    assert not (tmp_path / "metrics.json").exists()


def _trainer(step: int) -> SimpleNamespace:
    optimizer = SimpleNamespace(param_groups=[{"lr": 0.5}])
    return SimpleNamespace(sanity_checking=False, global_step=step, current_epoch=1, optimizers=[optimizer],
                           fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_idx=step - 10)))


def test_deferred_check_reads_the_flag_every_n_steps_and_names_the_first_bad_step():
    """The accelerator path (no host read per step), exercised on CPU tensors."""
    check = FiniteLossCheck(check_every_n_steps=4, defer=True)
    losses = [1.0, 2.0, float("inf"), float("nan")]
    for step, value in enumerate(losses[:3], start=10):
        check.on_before_backward(_trainer(step), None, torch.tensor(value))  # no host read yet: no error
    with pytest.raises(NonFiniteLossError, match=r"\(inf\) at step 12 \(epoch 1, batch 2, learning rate 0.5\)"):
        check.on_before_backward(_trainer(13), None, torch.tensor(losses[3]))


def test_deferred_check_also_runs_at_epoch_end_and_passes_finite_losses():
    check = FiniteLossCheck(check_every_n_steps=100, defer=True)
    for step in range(10, 15):
        check.on_before_backward(_trainer(step), None, torch.tensor(0.1 * step))
    check.on_train_epoch_end(None, None)  # finite: nothing raised
    check.on_before_backward(_trainer(15), None, torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError, match="at step 15"):
        check.on_train_epoch_end(None, None)


class ThreadGroup:
    """Stands for a DDP process group: each rank is a thread, a sum all-reduce meets at a barrier. A
    rank left waiting (the other raised alone) breaks the barrier after 5 s instead of hanging."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world, timeout=5)
        self.slots: list[torch.Tensor | None] = [None] * world
        self.gathers = [0] * world

    def trainer(self, rank: int, step: int) -> SimpleNamespace:
        trainer = _trainer(step)
        trainer.world_size, trainer.global_rank = len(self.slots), rank
        trainer.strategy = SimpleNamespace(reduce=partial(self._reduce, rank))
        return trainer

    def _reduce(self, rank: int, tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "sum"
        self.slots[rank], self.gathers[rank] = tensor.clone(), self.gathers[rank] + 1
        self.barrier.wait()
        out = torch.stack(self.slots).sum(0)
        self.barrier.wait()
        return out

    def run(self, losses: list[list[float]], **kwargs) -> list[str | None]:
        """Each rank's losses from step 10 on, then the epoch's end: the error each rank raised."""
        errors: list[str | None] = [None] * len(losses)

        def rank_main(rank: int) -> None:
            check = FiniteLossCheck(**kwargs)
            try:
                for step, value in enumerate(losses[rank], start=10):
                    check.on_before_backward(self.trainer(rank, step), None, torch.tensor(value))
                check.on_train_epoch_end(self.trainer(rank, 10 + len(losses[rank])), None)
            except Exception as err:  # noqa: BLE001 - what each rank raised is the result
                errors[rank] = f"{type(err).__name__}: {err}"

        threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(len(losses))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return errors


NAN, INF, OK = float("nan"), float("inf"), 1.0


@pytest.mark.parametrize("defer", [False, True])
def test_under_ddp_every_rank_raises_the_same_error_naming_the_bad_rank(defer):
    """Rank 1's loss is inf at step 12: every rank stops with the same line (per step: before that
    step's backward; deferred: at the next check point), none is left waiting in a collective."""
    group = ThreadGroup(2)
    errors = group.run([[OK, OK, OK, OK], [OK, OK, INF, OK]], check_every_n_steps=100, defer=defer)
    assert errors[0] == errors[1], errors
    assert errors[0].startswith("NonFiniteLossError: non-finite training loss (inf) at step 12 on rank 1 (epoch 1, "
                                "batch 2, learning rate 0.5)"), errors[0]
    assert group.gathers[0] == group.gathers[1] == (3 if not defer else 1)  # per step: stopped before step 13


def test_deferred_under_ddp_names_the_earliest_bad_step_of_any_rank():
    """Rank 1's nan at step 11 reaches rank 0's weights through the gradient all-reduce, so rank 0's
    loss is nan from step 12: the error names step 11 and rank 1. On a tie the lower rank is named."""
    errors = ThreadGroup(2).run([[OK, OK, NAN, NAN], [OK, NAN, NAN, NAN]], check_every_n_steps=100, defer=True)
    assert errors[0] == errors[1] and "(nan) at step 11 on rank 1 (epoch 1, batch 1," in errors[0], errors
    errors = ThreadGroup(3).run([[OK, OK], [OK, NAN], [OK, INF]], check_every_n_steps=2, defer=True)
    assert len(set(errors)) == 1 and "(nan) at step 11 on rank 1 " in errors[0], errors


@pytest.mark.parametrize("defer", [False, True])
def test_under_ddp_finite_losses_pass_on_every_rank_with_the_same_collectives(defer):
    group = ThreadGroup(2)
    assert group.run([[OK] * 7, [2.0] * 7], check_every_n_steps=3, defer=defer) == [None, None]
    assert group.gathers == ([7, 7] if not defer else [3, 3])  # deferred: steps 12 and 15, the epoch's end


@pytest.mark.slow  # default tier: under ~5 min on 2 cores (make test-all runs it)
def test_in_a_sweep_the_bad_job_fails_with_error_json_and_the_next_one_runs(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", "optimizer.lr=1e9,0.002", "trainer.max_epochs=1", *QUICK[1:],
                      f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode != 0
    error = json.loads((sweep / "0" / "error.json").read_text())
    assert error["type"] == "NonFiniteLossError" and "non-finite training loss (nan) at step" in error["error"]
    assert not (sweep / "0" / "metrics.json").exists()
    assert json.loads((sweep / "1" / "metrics.json").read_text())["epochs"] == 1
    assert "error: non-finite training loss" in result.stdout
