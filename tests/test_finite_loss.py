"""A nan/inf training loss stops the run at once, in one line naming the step."""

from __future__ import annotations

import json
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
