"""lab's lean optimizer step trains exactly as Lightning's automatic optimization does (weights,
optimizer state, counters, hook order, outputs), and leaves every case it does not cover to
Lightning's own path."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler

from lab import lean_step
from lab.profiler import NoProfiler
from tests.test_hook_dispatch import BATCHES, count_calls, trained

LIGHTNINGS_STEP = Precision.optimizer_step.__code__  # entered once a step on Lightning's path only


class Net(L.LightningModule):
    def __init__(self, optimizer: str = "adamw", returns: str = "loss") -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.optimizer, self.returns = optimizer, returns
        self.outputs: list = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.layer(x), y)
        if self.returns == "none" and batch_idx == 1:
            return None  # Lightning skips backward, still steps the optimizer
        return {"loss": loss, "seen": len(y)} if self.returns == "dict" else loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.outputs.append({k: (round(float(v), 6) if torch.is_tensor(v) else v) for k, v in outputs.items()})

    def configure_optimizers(self):
        if self.optimizer == "lbfgs":  # calls the closure several times a step
            return torch.optim.LBFGS(self.parameters(), lr=0.5, max_iter=3)
        if self.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        else:
            optimizer = torch.optim.AdamW(self.parameters(), lr=0.05)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def train(tmp_path, profiler, module_class=Net, module_args=None, **trainer_args):
    """(module, trainer, calls of Lightning's precision.optimizer_step) after a 2-epoch fit."""
    fitted: list = []
    calls = count_calls(LIGHTNINGS_STEP, lambda: fitted.extend(trained(
        tmp_path, profiler, lambda: module_class(**(module_args or {})), scale=3.0, max_epochs=2, **trainer_args)))
    return (*fitted, calls)


def same_training(tmp_path, module_args=None, **trainer_args):
    """Trains under lab's profiler and Lightning's; asserts the two ended identical; returns the step calls."""
    lab, lab_trainer, lab_calls = train(tmp_path / "lab", NoProfiler(), module_args=module_args, **trainer_args)
    ref, ref_trainer, ref_calls = train(tmp_path / "ref", PassThroughProfiler(), module_args=module_args,
                                        **trainer_args)
    assert torch.equal(lab.layer.weight, ref.layer.weight) and torch.equal(lab.layer.bias, ref.layer.bias)
    # optimizer state (LBFGS keeps lists of tensors) and param groups (the lr schedule), bit for bit
    torch.testing.assert_close(lab_trainer.optimizers[0].state_dict(), ref_trainer.optimizers[0].state_dict(),
                               rtol=0, atol=0)
    assert lab_trainer.global_step == ref_trainer.global_step == 2 * BATCHES
    assert lab_trainer.fit_loop.state_dict() == ref_trainer.fit_loop.state_dict()  # checkpoints and resuming
    assert lab.outputs == ref.outputs
    assert ref_calls == 2 * BATCHES
    return lab_calls


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "lbfgs"])
def test_the_lean_step_trains_exactly_as_lightning(tmp_path, optimizer):
    assert same_training(tmp_path, {"optimizer": optimizer}) == 0  # and it was the lean path that ran


@pytest.mark.parametrize("returns", ["dict", "none"])
def test_step_outputs_reach_the_batch_end_hooks_as_in_lightning(tmp_path, returns):
    assert same_training(tmp_path, {"returns": returns}) == 0


def test_bf16_autocast_without_a_scaler_takes_the_lean_step(tmp_path):
    assert same_training(tmp_path, precision="bf16-mixed") == 0


@pytest.mark.parametrize("trainer_args", [
    {"gradient_clip_val": 0.01},
    {"accumulate_grad_batches": 2},
], ids=["clipping", "accumulation"])
def test_what_the_lean_step_does_not_cover_runs_lightnings_step(tmp_path, trainer_args):
    _, fitting, calls = train(tmp_path, NoProfiler(), **trainer_args)
    assert calls == fitting.global_step > 0


def test_an_overridden_optimizer_step_is_called(tmp_path):
    steps = []

    class OwnStep(Net):
        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
            steps.append(batch_idx)
            optimizer.step(closure=optimizer_closure)

    _, _, calls = train(tmp_path, NoProfiler(), OwnStep)
    assert steps == list(range(BATCHES)) * 2 and calls == 2 * BATCHES


def test_step_hooks_see_the_gradients_as_in_lightning(tmp_path):
    class Grads(Callback):
        def __init__(self) -> None:
            self.seen = []

        def on_before_zero_grad(self, trainer, pl_module, optimizer):
            self.seen.append(("zero_grad", pl_module._current_fx_name))

        def on_after_backward(self, trainer, pl_module):
            self.seen.append(("after_backward", round(float(pl_module.layer.weight.grad.norm()), 6)))

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.seen.append(("before_step", round(float(pl_module.layer.weight.grad.norm()), 6)))

    lab, ref = Grads(), Grads()
    train(tmp_path / "lab", NoProfiler(), callbacks=[lab])
    train(tmp_path / "ref", PassThroughProfiler(), callbacks=[ref])
    assert lab.seen == ref.seen and len(lab.seen) == 3 * 2 * BATCHES
    assert lab.seen[0] == ("zero_grad", "on_before_zero_grad")


def test_lightning_still_has_the_loop_the_lean_step_replaces():
    """A Lightning upgrade that changes it makes install() leave Lightning alone; this says so."""
    from lightning.pytorch.loops.optimization.automatic import Closure, _AutomaticOptimization

    assert lean_step._shape_matches(_AutomaticOptimization, Closure)
    assert lean_step.install()


@pytest.mark.parametrize(("strategy", "precision", "lean"), [
    ("single", "32-true", True),
    ("single", "bf16-mixed", True),
    ("single", "16-mixed", False),  # a GradScaler scales the loss and unscales before the step
    ("ddp", "32-true", False),  # DDP's own backward and step hooks
])
def test_the_lean_step_is_taken_only_where_every_layer_passes_through(strategy, precision, lean):
    from types import SimpleNamespace

    from lightning.pytorch.plugins.precision import MixedPrecision
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    plugin = Precision() if precision == "32-true" else MixedPrecision(precision, "cpu")
    chosen = (SingleDeviceStrategy("cpu", precision_plugin=plugin) if strategy == "single"
              else DDPStrategy(precision_plugin=plugin))
    trainer = SimpleNamespace(strategy=chosen, lightning_module=Net(), callbacks=[Callback()], optimizers=[],
                              accumulate_grad_batches=1, gradient_clip_val=None)
    assert (lean_step._lean_plan(trainer) is not None) == lean


def test_training_step_is_called_directly_only_through_the_base_strategys_own():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import SingleDeviceStrategy

    class OwnStep(SingleDeviceStrategy):
        def training_step(self, *args, **kwargs):
            return super().training_step(*args, **kwargs)

    module = Net()
    for strategy, wrapped, direct in ((SingleDeviceStrategy("cpu"), False, True), (OwnStep("cpu"), False, False),
                                      (SingleDeviceStrategy("cpu"), True, False)):
        strategy.model = torch.nn.Sequential(module) if wrapped else module
        assert lean_step._direct_training_step(SimpleNamespace(strategy=strategy, lightning_module=module)) == direct


def test_an_overridden_backward_runs_under_its_hook_name_and_may_log(tmp_path):
    names: list = []

    class OwnBackward(Net):
        def backward(self, loss, *args, **kwargs):
            names.append(self._current_fx_name)
            self.log("backward_loss", loss.detach(), on_step=False, on_epoch=True)  # allowed in Lightning's backward
            loss.backward(*args, **kwargs)

    lab, lab_trainer, lab_calls = train(tmp_path / "lab", NoProfiler(), OwnBackward)
    lab_names, names[:] = list(names), []
    ref, ref_trainer, _ = train(tmp_path / "ref", PassThroughProfiler(), OwnBackward)
    assert lab_calls == 0 and lab_names == names == ["backward"] * 2 * BATCHES
    assert torch.equal(lab.layer.weight, ref.layer.weight)
    assert float(lab_trainer.callback_metrics["backward_loss"]) == float(ref_trainer.callback_metrics["backward_loss"])


def test_training_step_runs_under_its_hook_name_and_logs_with_its_defaults(tmp_path):
    """The lean path calls training_step itself: Lightning's names and logging defaults hold in it."""
    names: list = []

    class Logs(Net):
        def training_step(self, batch, batch_idx):
            names.append(self._current_fx_name)
            loss = super().training_step(batch, batch_idx)
            self.log("train/default", loss)  # in training_step: on_step=True, on_epoch=False
            return loss

    lab, lab_trainer, lab_calls = train(tmp_path / "lab", NoProfiler(), Logs)
    lab_names, names[:] = list(names), []
    ref, ref_trainer, _ = train(tmp_path / "ref", PassThroughProfiler(), Logs)
    assert lab_calls == 0 and lab_names == names == ["training_step"] * 2 * BATCHES
    assert torch.equal(lab.layer.weight, ref.layer.weight)
    assert sorted(lab_trainer.logged_metrics) == sorted(ref_trainer.logged_metrics) == ["train/default"]
    assert float(lab_trainer.logged_metrics["train/default"]) == float(ref_trainer.logged_metrics["train/default"])


def test_a_lightning_optimizer_from_configure_optimizers_keeps_lightnings_step(tmp_path):
    from lightning.pytorch.core.optimizer import LightningOptimizer

    class Wrapped(Net):
        def configure_optimizers(self):
            return LightningOptimizer(torch.optim.SGD(self.parameters(), lr=0.1))

    class Steps(Callback):
        def __init__(self) -> None:
            self.seen = []

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.seen.append(type(optimizer).__name__)

    lab, ref = Steps(), Steps()
    _, _, calls = train(tmp_path / "lab", NoProfiler(), Wrapped, callbacks=[lab])
    train(tmp_path / "ref", PassThroughProfiler(), Wrapped, callbacks=[ref])
    assert calls == 2 * BATCHES and lab.seen == ref.seen and len(lab.seen) == 2 * BATCHES
