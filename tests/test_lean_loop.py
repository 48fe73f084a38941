"""lab's lean training-batch loop trains, logs, validates and schedules exactly as Lightning's
loop does (weights, optimizer and scheduler state, counters, every logged metric, hook order),
and leaves the cases it does not cover to Lightning's own methods."""

from __future__ import annotations

import copy
import csv
from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.profilers import PassThroughProfiler

from lab import lean_loop
from lab.profiler import NoProfiler
from tests.test_hook_dispatch import BATCHES, batches, count_calls, trained, trainer


def uneven(scale: float = 3.0) -> torch.utils.data.DataLoader:
    """BATCHES batches of 4, 4 and 3 samples: epoch means weigh each batch by its size, which the
    logger reads from the batch the loop hands it."""
    samples = 4 * BATCHES - 1
    data = torch.utils.data.TensorDataset(scale * torch.randn(samples, 4), torch.randint(0, 2, (samples,)))
    return torch.utils.data.DataLoader(data, batch_size=4)


class Hooks(Callback):
    """Records the per-batch hooks around the loop, with the values they see."""

    def __init__(self) -> None:
        self.seen: list = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(("start", trainer.current_epoch, batch_idx, trainer.global_step))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.seen.append(("end", batch_idx, round(float(loss), 6), dict(sorted(
            (k, round(float(v), 6)) for k, v in trainer.progress_bar_metrics.items()))))

    def on_validation_start(self, trainer, pl_module):
        self.seen.append(("validate", trainer.current_epoch, trainer.global_step))


class Logged(L.LightningModule):
    """Logs per step (or only per epoch), validates, steps a per-step and a plateau schedule."""

    def __init__(self, on_step: bool = True, skip_at: int | None = None, manual: bool = False,
                 plateau: bool = True) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.on_step, self.skip_at, self.plateau = on_step, skip_at, plateau
        self.automatic_optimization = not manual

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.layer(x), y)
        if self.on_step:
            self.log("train/step_loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        if not self.automatic_optimization:
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            self.lr_schedulers()[0].step()
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", torch.nn.functional.cross_entropy(self.layer(x), y), prog_bar=True)

    def on_train_batch_start(self, batch, batch_idx):
        return -1 if batch_idx == self.skip_at and self.current_epoch == 1 else None

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        step = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        if not self.plateau:
            return [optimizer], [{"scheduler": step, "interval": "step"}]
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
        return [optimizer], [{"scheduler": step, "interval": "step"},
                             {"scheduler": plateau, "interval": "step", "monitor": "val/loss", "strict": False}]


def fit(tmp_path, profiler, module_args=None, extra_callbacks=(), **trainer_args):
    """(module, trainer, hook record, CSV log rows, calls of Lightning's advance) after a 2-epoch fit."""
    if not lean_loop.install():
        pytest.skip(f"lab.lean_loop stays off on Lightning {L.__version__} (checked: {lean_loop.CHECKED_RELEASE}x)")
    hooks = Hooks()
    logger = CSVLogger(tmp_path, name="log", version=0)
    torch.manual_seed(0)
    module = Logged(**(module_args or {}))
    trainer_args.setdefault("log_every_n_steps", 1)
    fitting = trainer(tmp_path, profiler, max_epochs=2, callbacks=[hooks, *copy.deepcopy(list(extra_callbacks))],
                      logger=logger, **trainer_args)
    calls = count_calls(lean_loop.lightnings_methods["advance"].__code__,
                        lambda: fitting.fit(module, uneven(), uneven()))
    with open(logger.log_dir + "/metrics.csv") as rows:
        logged = list(csv.DictReader(rows))
    return module, fitting, hooks.seen, logged, calls


def same_run(tmp_path, module_args=None, **trainer_args) -> int:  # trainer_args may hold extra_callbacks
    """Fits under lab's profiler and Lightning's; asserts the two ended identical; returns how
    often Lightning's own advance ran under lab's."""
    lab, lab_trainer, lab_seen, lab_log, lab_calls = fit(tmp_path / "lab", NoProfiler(), module_args, **trainer_args)
    ref, ref_trainer, ref_seen, ref_log, ref_calls = fit(tmp_path / "ref", PassThroughProfiler(), module_args,
                                                         **trainer_args)
    assert torch.equal(lab.layer.weight, ref.layer.weight) and torch.equal(lab.layer.bias, ref.layer.bias)
    torch.testing.assert_close(lab_trainer.optimizers[0].state_dict(), ref_trainer.optimizers[0].state_dict(),
                               rtol=0, atol=0)
    assert [c.scheduler.state_dict() for c in lab_trainer.lr_scheduler_configs] == \
           [c.scheduler.state_dict() for c in ref_trainer.lr_scheduler_configs]
    assert lab_trainer.fit_loop.state_dict() == ref_trainer.fit_loop.state_dict()  # checkpoints and resuming
    assert lab_trainer.global_step == ref_trainer.global_step > 0
    assert lab_trainer.should_stop == ref_trainer.should_stop
    for metrics in ("callback_metrics", "logged_metrics", "progress_bar_metrics"):
        assert {k: float(v) for k, v in getattr(lab_trainer, metrics).items()} == \
               {k: float(v) for k, v in getattr(ref_trainer, metrics).items()}, metrics
    assert lab_seen == ref_seen  # the same hooks, in the same order, seeing the same values
    assert lab_log == ref_log and lab_log  # what reached the logger, step by step
    assert ref_calls > 0
    return lab_calls


@pytest.mark.parametrize("plateau", [True, False], ids=["and-plateau", "no-plateau"])
@pytest.mark.parametrize("on_step", [True, False], ids=["logs-per-step", "logs-per-epoch"])
def test_the_lean_loop_trains_and_logs_exactly_as_lightning(tmp_path, on_step, plateau):
    # validation inside the epoch (every 2 batches), a per-step schedule and maybe a plateau one
    assert same_run(tmp_path, {"on_step": on_step, "plateau": plateau}, val_check_interval=2) == 0  # the lean loop ran


@pytest.mark.parametrize("on_step", [True, False], ids=["logs-per-step", "logs-per-epoch"])
def test_accumulated_gradients_step_the_schedule_and_the_logger_as_in_lightning(tmp_path, on_step):
    assert same_run(tmp_path, {"on_step": on_step}, accumulate_grad_batches=2, log_every_n_steps=2) == 0


def test_early_stopping_inside_the_epoch_stops_as_in_lightning(tmp_path):
    stop = EarlyStopping(monitor="val/loss", patience=0, min_delta=10.0, check_on_train_epoch_end=False)
    assert same_run(tmp_path, val_check_interval=1, extra_callbacks=[stop]) == 0


def test_a_batch_start_hook_returning_minus_one_ends_the_epoch_as_in_lightning(tmp_path):
    assert same_run(tmp_path, {"skip_at": 1}) == 0


def test_manual_optimization_runs_as_in_lightning(tmp_path):
    assert same_run(tmp_path, {"manual": True}) == 0


def test_lightnings_profiler_keeps_lightnings_loop(tmp_path):
    *_, calls = fit(tmp_path, PassThroughProfiler())
    assert calls == 2 * BATCHES


def test_a_run_resumed_mid_epoch_ends_as_in_lightning(tmp_path):
    """The restarting batch takes Lightning's loop, the rest lab's: the same end as Lightning's alone."""
    if not lean_loop.install():
        pytest.skip(f"lab.lean_loop stays off on Lightning {L.__version__}")
    every_2 = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1, filename="{step}")
    trained(tmp_path / "first", NoProfiler(), Logged, scale=3.0, callbacks=[every_2], enable_checkpointing=True)
    ends, calls = [], []
    for profiler in (NoProfiler(), PassThroughProfiler()):
        torch.manual_seed(1)
        module = Logged()
        resumed = trainer(tmp_path / type(profiler).__name__, profiler, max_epochs=2)
        calls.append(count_calls(lean_loop.lightnings_methods["advance"].__code__, partial(
            resumed.fit, module, batches(3.0), ckpt_path=tmp_path / "ckpt" / "step=2.ckpt")))  # after 2 of 3 batches
        ends.append((module.layer.weight.detach().clone(), resumed.fit_loop.state_dict(), resumed.global_step))
    assert torch.equal(ends[0][0], ends[1][0]) and ends[0][1:] == ends[1][1:]
    assert ends[0][2] == 2 * BATCHES
    assert calls == [1, BATCHES + 1]  # lab: Lightning's loop for the restarting batch only


def test_a_distributed_run_keeps_lightnings_loop(tmp_path, monkeypatch):
    monkeypatch.setattr(lean_loop, "_distributed", lambda: True)  # as in a DDP process
    *_, calls = fit(tmp_path / "dist", NoProfiler())
    assert calls == 2 * BATCHES


def test_a_lightning_loop_of_another_shape_is_left_alone():
    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
    from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector

    def copy(cls: type, **changes) -> type:
        return type(cls.__name__, (), {**{k: v for k, v in vars(cls).items() if not k.startswith("__")}, **changes})

    assert lean_loop._shape_matches(copy(_TrainingEpochLoop), copy(_LoggerConnector))
    assert not lean_loop._shape_matches(copy(_TrainingEpochLoop, advance=lambda self, fetcher, extra: None),
                                        copy(_LoggerConnector))
    assert not lean_loop._shape_matches(copy(_TrainingEpochLoop),
                                        copy(_LoggerConnector, on_batch_start=lambda self, batch: None))


def test_batch_transfer_hooks_run_as_in_lightning(tmp_path):
    """The lean loop calls the batch-transfer hooks itself: the same hooks, order, arguments,
    hook names (a module's hook under its own, a datamodule's inside batch_to_device) and batches."""
    from tests.test_hook_dispatch import Tiny, trained

    def run(profiler, folder):
        seen: list = []

        class Module(Tiny):
            def on_before_batch_transfer(self, batch, dataloader_idx):
                seen.append(("before", self._current_fx_name, dataloader_idx, float(batch[0].sum())))
                return batch[0] + 1, batch[1]

            def transfer_batch_to_device(self, batch, device, dataloader_idx):
                seen.append(("transfer", self._current_fx_name, str(device), dataloader_idx))
                return super().transfer_batch_to_device(batch, device, dataloader_idx)

        class Data(L.LightningDataModule):
            def train_dataloader(self):
                return batches()

            def on_after_batch_transfer(self, batch, dataloader_idx):
                seen.append(("after", self.trainer.lightning_module._current_fx_name, dataloader_idx))
                return batch[0] * 2, batch[1]

        module, _ = trained(folder, profiler, lambda: Module([]), Data())
        return seen, module.layer.weight.detach().clone()

    lab_seen, lab_weight = run(NoProfiler(), tmp_path / "lab")
    ref_seen, ref_weight = run(PassThroughProfiler(), tmp_path / "ref")
    assert lab_seen == ref_seen and len(lab_seen) == 3 * BATCHES
    assert [s[:2] for s in lab_seen[:3]] == [("before", "on_before_batch_transfer"),
                                              ("transfer", "transfer_batch_to_device"), ("after", "batch_to_device")]
    assert torch.equal(lab_weight, ref_weight)


def test_a_precision_that_converts_inputs_trains_as_in_lightning(tmp_path):
    assert same_run(tmp_path, {"plateau": False}, precision="bf16-true") == 0


@pytest.mark.parametrize("when", [
    {"check_val_every_n_epoch": 2},  # the second epoch only
    {"check_val_every_n_epoch": None, "val_check_interval": 4},  # every 4 batches, counted across epochs
    {"limit_val_batches": 0},  # no validation
    {"val_check_interval": 0.5},  # twice an epoch
], ids=["every-2-epochs", "across-epochs", "none", "half-epochs"])
def test_validation_runs_when_lightnings_loop_runs_it(tmp_path, when):
    assert same_run(tmp_path, {"plateau": False}, **when) == 0


def test_a_subclassed_epoch_loop_keeps_lightnings_methods(tmp_path):
    """A subclass may change what the lean path replicates (here: when to validate)."""
    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop

    from tests.test_hook_dispatch import Tiny

    lean_loop.install()
    validated: list = []

    class NeverValidates(_TrainingEpochLoop):
        def _should_check_val_fx(self, data_fetcher):
            return False

    class Module(Tiny):
        def validation_step(self, batch, batch_idx):
            validated.append(batch_idx)

    fitting = trainer(tmp_path, NoProfiler(), num_sanity_val_steps=0)
    fitting.fit_loop.epoch_loop = NeverValidates(fitting)
    calls = count_calls(lean_loop.lightnings_methods["advance"].__code__,
                        lambda: fitting.fit(Module([]), batches(), batches()))
    assert calls == BATCHES and validated == []
