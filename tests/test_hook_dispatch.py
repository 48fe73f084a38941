"""lab's hook dispatch skips only the hooks that cannot do anything: every hook with a body runs,
in Lightning's order, with Lightning's arguments; a real profiler still sees every hook."""

from __future__ import annotations

import inspect
import logging
import sys

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, LambdaCallback
from lightning.pytorch.profilers import PassThroughProfiler

from lab import hook_dispatch, lean_loop
from lab.callbacks.checkpoint import Checkpoint
from lab.profiler import NoProfiler

BATCHES = 3


class Recorder(Callback):
    """Overrides a few per-batch hooks, leaves the rest to Callback's empty ones."""

    def __init__(self, seen: list) -> None:
        self.seen = seen

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(("cb.on_train_batch_start", batch_idx, pl_module._current_fx_name))

    def on_before_backward(self, trainer, pl_module, loss):
        self.seen.append(("cb.on_before_backward", round(float(loss.detach()), 6)))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append(("cb.on_train_batch_end", batch_idx, round(float(outputs["loss"]), 6)))


class Tiny(L.LightningModule):
    def __init__(self, seen: list) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.seen = seen

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def on_after_backward(self):
        self.seen.append(("module.on_after_backward", self._current_fx_name))

    def on_train_batch_start(self, batch, batch_idx):
        self.seen.append(("module.on_train_batch_start", batch_idx))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def batches(scale: float = 1.0) -> torch.utils.data.DataLoader:
    data = torch.utils.data.TensorDataset(scale * torch.randn(BATCHES * 4, 4), torch.randint(0, 2, (BATCHES * 4,)))
    return torch.utils.data.DataLoader(data, batch_size=4)


def trainer(tmp_path, profiler, **kwargs) -> L.Trainer:
    """A one-epoch CPU Trainer, with lab's dispatch, lean step and lean loop installed, as lab.build
    installs them (they apply under NoProfiler only)."""
    lean_loop.install()  # and lean_step and hook_dispatch, whose gate they share
    defaults = dict(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    return L.Trainer(profiler=profiler, **{**defaults, **kwargs})


def fit(tmp_path, profiler) -> list:
    seen: list = []
    torch.manual_seed(0)
    lam = LambdaCallback(on_before_optimizer_step=lambda tr, pl, opt: seen.append(("lambda.before_step",)))
    trainer(tmp_path, profiler, callbacks=[Recorder(seen), lam, Callback()]).fit(Tiny(seen), batches())
    return seen


def count_calls(code, run):
    """How often a function with this code object is entered while `run()` runs."""
    calls = [0]

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is code:
            calls[0] += 1

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return calls[0]


def test_every_hook_with_a_body_runs_as_lightning_runs_it(tmp_path):
    lab_way = fit(tmp_path / "lab", NoProfiler())
    lightning_way = fit(tmp_path / "lightning", PassThroughProfiler())
    assert lab_way == lightning_way
    assert lab_way.count(("lambda.before_step",)) == BATCHES  # a hook set on the instance (LambdaCallback)
    assert ("cb.on_train_batch_start", 0, "on_train_batch_start") in lab_way
    assert ("module.on_after_backward", "on_after_backward") in lab_way


def test_empty_hooks_are_skipped_only_under_labs_profiler(tmp_path):
    empty = Callback.on_before_zero_grad.__code__
    assert count_calls(empty, lambda: fit(tmp_path / "lab", NoProfiler())) == 0
    # Lightning's own dispatch calls the base no-op for each of the three callbacks, every batch
    assert count_calls(empty, lambda: fit(tmp_path / "lightning", PassThroughProfiler())) >= 2 * BATCHES


def test_with_lightnings_debug_log_on_every_hook_is_called_and_logged(tmp_path, caplog):
    empty = Callback.on_before_zero_grad.__code__
    with caplog.at_level(logging.DEBUG, logger="lightning.pytorch.trainer.call"):
        calls = count_calls(empty, lambda: fit(tmp_path / "lab", NoProfiler()))
    assert calls >= 2 * BATCHES
    assert any("calling callback hook: on_before_zero_grad" in r.getMessage() for r in caplog.records)
    assert any("calling strategy hook: training_step" in r.getMessage() for r in caplog.records)


def test_an_empty_hook_is_told_from_one_with_a_body():
    def documented():
        """Only a docstring."""

    def body():
        return 1

    assert hook_dispatch.does_nothing(Callback.on_train_batch_end)
    assert hook_dispatch.does_nothing(L.LightningModule.on_before_backward)
    assert hook_dispatch.does_nothing(documented)
    assert not hook_dispatch.does_nothing(body)
    assert not hook_dispatch.does_nothing(L.LightningModule.optimizer_step)
    assert not hook_dispatch.does_nothing(L.LightningModule.on_before_batch_transfer)  # returns the batch
    assert not hook_dispatch.does_nothing(None)


def test_the_step_signature_is_read_once_per_function(monkeypatch):
    hook_dispatch.install()
    from lightning.pytorch.loops import training_epoch_loop

    check = training_epoch_loop.is_param_in_hook_signature
    reads = []
    real = inspect.getfullargspec
    monkeypatch.setattr("inspect.getfullargspec", lambda fn: reads.append(fn) or real(fn))

    class Module(Tiny):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx)

    class NoIndex(Tiny):
        def training_step(self, batch):
            return super().training_step(batch, 0)

    module, other = Module([]), NoIndex([])
    answers = [check(module.training_step, "batch_idx", min_args=2) for _ in range(5)]
    assert answers == [True] * 5 and len(reads) == 1
    assert check(other.training_step, "batch_idx", min_args=2) is False  # another function, another answer
    assert len(reads) == 2


def test_checkpoints_every_n_train_steps_are_still_written(tmp_path):
    callback = Checkpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1, filename="{step}")
    trainer(tmp_path, NoProfiler(), enable_checkpointing=True, callbacks=[callback]).fit(Tiny([]), batches())
    assert sorted(p.name for p in tmp_path.glob("step=*.ckpt")) == [f"step={n}.ckpt" for n in range(1, BATCHES + 1)]


@pytest.mark.parametrize("name", sorted(hook_dispatch._EXPECTED))
def test_lightning_still_has_the_functions_replaced(name):
    """A Lightning upgrade that changes them makes install() leave Lightning alone; this says so."""
    from lightning.pytorch.trainer import call

    assert hook_dispatch._shapes_match(call), f"lightning.pytorch.trainer.call.{name} changed shape"


def trained(tmp_path, profiler, make_module, datamodule=None, scale: float = 10.0, **trainer_args):
    """(module, trainer) after a fit from seed 0: the same weights and batches on every call."""
    torch.manual_seed(0)
    module = make_module()
    fitting = trainer(tmp_path, profiler, **trainer_args)
    if datamodule is None:
        fitting.fit(module, batches(scale))
    else:
        fitting.fit(module, datamodule=datamodule)
    return module, fitting


def _trained_weights(tmp_path, profiler, module_class=Tiny, datamodule=None, **trainer_args) -> torch.Tensor:
    module, _ = trained(tmp_path, profiler, lambda: module_class([]), datamodule, **trainer_args)
    return module.layer.weight.detach().clone()


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping_still_clips(tmp_path, algorithm):
    clipped = _trained_weights(tmp_path, NoProfiler(), gradient_clip_val=0.01, gradient_clip_algorithm=algorithm)
    as_lightning = _trained_weights(tmp_path, PassThroughProfiler(), gradient_clip_val=0.01,
                                    gradient_clip_algorithm=algorithm)
    unclipped = _trained_weights(tmp_path, NoProfiler())
    assert torch.equal(clipped, as_lightning)
    assert not torch.allclose(clipped, unclipped)


def test_a_configure_gradient_clipping_override_runs(tmp_path):
    calls = []

    class OwnClipping(Tiny):
        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            calls.append(self._current_fx_name)
            self.clip_gradients(optimizer, gradient_clip_val=0.01, gradient_clip_algorithm="value")

    own = _trained_weights(tmp_path, NoProfiler(), module_class=OwnClipping)
    assert calls == ["configure_gradient_clipping"] * BATCHES
    assert torch.equal(own, _trained_weights(tmp_path, NoProfiler(), gradient_clip_val=0.01,
                                             gradient_clip_algorithm="value"))


def test_a_datamodules_batch_hook_runs_every_batch(tmp_path):
    class Data(L.LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            self.seen = []

        def train_dataloader(self):
            return batches()

        def on_after_batch_transfer(self, batch, dataloader_idx):
            self.seen.append(dataloader_idx)
            x, y = batch
            return 0 * x, y  # the module then learns from zeros: only the bias moves

    data = Data()
    weights = _trained_weights(tmp_path, NoProfiler(), datamodule=data)
    assert data.seen == [0] * BATCHES
    torch.manual_seed(0)
    assert torch.equal(weights, Tiny([]).layer.weight)


def test_a_callback_added_during_the_fit_is_called_from_then_on(tmp_path):
    """Which callbacks do something at a hook is worked out once per list of callbacks, not once per fit."""
    seen: list = []

    class Late(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append((trainer.current_epoch, batch_idx))

    class Adder(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                trainer.callbacks.append(Late())

    torch.manual_seed(0)
    trainer(tmp_path, NoProfiler(), max_epochs=2, callbacks=[Adder()]).fit(Tiny([]), batches())
    assert seen == [(1, batch) for batch in range(BATCHES)]
