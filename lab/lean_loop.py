"""Lightning's training-batch loop, minus the bookkeeping that cannot change anything.

Around every training step, Lightning's `_TrainingEpochLoop.advance` and `on_advance_end` look
up the active loop and its result collection a dozen times (each a chain of properties ending in
a string-enum compare), build the step-level metrics dicts twice and the logger's once, ask three
times whether gradients are being accumulated, reset the validation loop's restart flag through
a walk over its attributes, and dispatch the strategy's empty `on_train_batch_start`. Each is a
few microseconds when timed alone, but a training step runs them with cold caches, straight after
the forward and backward passes have swept them: on 2 CPU cores they cost about 0.45 ms of a 28 ms
Fashion-MNIST step (interleaved A/B, 8 paired runs of 600 steps), 40% of what lab cost over a
hand-written loop.

`install()` gives both methods a lean path that does the same things in the same order: the
same fetch, batch transfer and hooks with the same arguments (the batch-transfer hooks are called
directly, under the hook names Lightning's strategy and module layers would set, where those
layers are Lightning's own and only pass the call on), the same progress counters,
scheduler steps, validation checks and checkpoint triggers. What it skips is work with no
effect in that case: the step-level metrics when nothing was logged with `on_step=True` (the
dicts would be empty and the logger call a no-op), the accumulation checks when
`accumulate_grad_batches` is 1, the plateau-scheduler pass when no scheduler is a plateau one,
the no-op strategy hook, and re-asking every batch whether the module validates at all (two
is_overridden walks; answered once per module, val data and limit_val_batches). Lightning's
own methods run instead when the loop is restarting
(a mid-epoch resume), for `dataloader_iter` training steps, in a distributed run, and for
every trainer that takes Lightning's way in lab.hook_dispatch (a real profiler, or Lightning's
debug log on). It replicates parts of Lightning's loop and logger connector checked against
Lightning 2.6 (tests/test_lean_loop.py compares whole fits with Lightning's own loop): on another
Lightning release Lightning's loop stays. Installing it installs lab.lean_step and lab.hook_dispatch.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections import OrderedDict
from typing import Any

import torch.distributed as dist

from lab import lean_step
from lab.hook_dispatch import defining_class, lightnings_way

_installed = False
CHECKED_RELEASE = "2.6."  # the Lightning release whose loop the lean path was checked against
lightnings_methods: dict = {}  # Lightning's advance and on_advance_end, as install() found them

# What the lean path replicates: it is installed only where these are the shape checked here.
_EXPECTED = {
    "advance": ["self", "data_fetcher"],
    "on_advance_end": ["self", "data_fetcher"],
    "_update_learning_rates": ["self", "interval", "update_plateau_schedulers"],
    "_should_check_val_fx": ["self", "data_fetcher"],
    "_should_check_val_epoch": ["self"],
    "_build_kwargs": ["self", "kwargs", "batch", "batch_idx"],
}


def _shape_matches(loop: type, connector: type) -> bool:
    """Whether Lightning's loop and logger connector have the methods and signatures the lean path
    stands in for and uses (it replicates the connector's on_batch_start)."""
    on_batch_start = connector.__dict__.get("on_batch_start")
    if on_batch_start is None or list(inspect.signature(on_batch_start).parameters) != [
            "self", "batch", "dataloader_idx"]:
        return False
    if not all(callable(connector.__dict__.get(name)) for name in ("on_batch_end", "update_train_step_metrics")):
        return False
    for name, params in _EXPECTED.items():
        fn = loop.__dict__.get(name)
        if fn is None or list(inspect.signature(fn).parameters) != params:
            return False
    return all(hasattr(loop, name) for name in ("_is_training_done", "_save_loggers_on_train_batch_end",
                                                  "_num_ready_batches_reached", "_should_accumulate",
                                                  "update_lr_schedulers"))


def _transfer_plan(trainer: Any) -> tuple | None:
    """What moving a batch to the device calls, worked out once per fit, where the strategy's
    batch_to_device and the module's transfer handler are Lightning's own: (precision's
    convert_input or None when it is the base no-op, the device, [(hook, function, name to run
    it under) for the batch hooks that do something]). None: Lightning's path."""
    from lightning.fabric.plugins import Precision as FabricPrecision
    from lightning.pytorch import LightningModule
    from lightning.pytorch.core.hooks import DataHooks
    from lightning.pytorch.strategies import Strategy

    strategy, module = trainer.strategy, trainer.lightning_module
    selector = getattr(trainer._data_connector, "_datahook_selector", None)
    if (selector is None or defining_class(strategy, "batch_to_device") is not Strategy
            or any(defining_class(module, name) is not LightningModule
                   for name in ("_on_before_batch_transfer", "_apply_batch_transfer_handler", "_call_batch_hook"))):
        return None
    precision = strategy.precision_plugin
    convert = None if defining_class(precision, "convert_input") is FabricPrecision else precision.convert_input
    hooks = []
    for name in ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer"):
        owner = selector.get_instance(name)
        fn = getattr(owner, name)
        if name != "transfer_batch_to_device" and getattr(fn, "__func__", None) is getattr(DataHooks, name):
            continue  # the base hook returns the batch unchanged
        # a module's hook runs under its own name (lab.hook_dispatch), a datamodule's under the caller's
        hooks.append((name, fn, name if isinstance(owner, type(module)) else None))
    return convert, strategy.root_device, hooks


def _distributed() -> bool:
    """Whether this process is one of a distributed run (its loop also broadcasts SIGTERM)."""
    return dist.is_available() and dist.is_initialized()


def _logs_on_step(results: Any) -> bool:
    """Whether anything in the result collection was logged with on_step=True: only then do the
    step-level metrics (Lightning's `metrics(on_step=True)`) have entries."""
    return any(metric.meta.on_step for metric in results.values())


def install() -> bool:
    """Give Lightning's training-batch loop its lean path (once per process); False when this
    Lightning's loop is not the expected shape and its own stays."""
    global _installed
    if _installed:
        return True
    if not lean_step.install():  # and hook_dispatch, whose gate this shares
        return False
    try:
        import lightning
        from lightning.pytorch.loops import _Loop
        from lightning.pytorch.loops.fetchers import _PrefetchDataFetcher
        from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
        from lightning.pytorch.strategies import Strategy
        from lightning.pytorch.trainer import call
        from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector
        from lightning.pytorch.utilities.exceptions import SIGTERMException
    except ImportError:
        return False
    if not lightning.__version__.startswith(CHECKED_RELEASE) or not _shape_matches(_TrainingEpochLoop,
                                                                                    _LoggerConnector):
        logging.getLogger(__name__).debug("lab.lean_loop: Lightning's training epoch loop changed; left as it is")
        return False
    lightning_advance = _TrainingEpochLoop.advance
    lightning_on_advance_end = _TrainingEpochLoop.on_advance_end
    lightnings_methods.update(advance=lightning_advance, on_advance_end=lightning_on_advance_end)
    child_loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def lean(self, data_fetcher) -> bool:
        return not (self._restarting or type(data_fetcher) is not _PrefetchDataFetcher
                    or type(self) is not _TrainingEpochLoop  # a subclass may change what the lean path replicates
                    or self.trainer.fit_loop.epoch_loop is not self
                    or _distributed() or lightnings_way(self.trainer))

    def stop_restarting(loop) -> None:
        """`loop.restarting = False`, which walks the loop's attributes for child loops to set too:
        for a loop that is not restarting and has none (Lightning's evaluation loop) it sets nothing."""
        children = child_loops.get(loop)
        if children is None:
            children = child_loops[loop] = [v for v in vars(loop).values() if isinstance(v, _Loop)]
        if loop._restarting or children:
            loop.restarting = False

    def transfer(self, trainer, module, batch):
        """Lightning's convert_input, on_before_batch_transfer and strategy batch_to_device."""
        key = (module, trainer.strategy, trainer._data_connector._datahook_selector)
        cached = self.__dict__.get("_lab_transfer_plan")
        if cached is None or cached[0] != key:
            cached = self._lab_transfer_plan = (key, _transfer_plan(trainer))
        plan = cached[1]
        if plan is None:
            batch = trainer.precision_plugin.convert_input(batch)
            batch = module._on_before_batch_transfer(batch, dataloader_idx=0)
            return call._call_strategy_hook(trainer, "batch_to_device", batch, dataloader_idx=0)
        convert, device, hooks = plan
        if convert is not None:
            batch = convert(batch)
        previous = module._current_fx_name
        for name, fn, own_name in hooks:
            # the last two run inside the strategy's batch_to_device, under its name
            outer = previous if name == "on_before_batch_transfer" else "batch_to_device"
            module._current_fx_name = own_name or outer
            if name == "transfer_batch_to_device":
                batch = fn(batch, device, 0)
            else:
                batch = fn(batch, 0)
        module._current_fx_name = previous
        return batch

    def advance(self, data_fetcher) -> None:
        if not lean(self, data_fetcher):
            return lightning_advance(self, data_fetcher)
        trainer = self.trainer
        stop_restarting(self.val_loop)  # we train first: the val loop does not restart
        batch, _, __ = next(data_fetcher)
        batch_idx = self.batch_idx + 1
        progress = self.batch_progress
        progress.is_last_batch = data_fetcher.done

        module = trainer.lightning_module
        batch = transfer(self, trainer, module, batch)
        progress.increment_ready()
        # the logger connector's on_batch_start, on the result collection it would look up (ours)
        results = self._results
        connector = trainer._logger_connector
        if connector._first_loop_iter is None:
            connector._first_loop_iter = True
        elif connector._first_loop_iter is True:
            connector._first_loop_iter = False
        results.batch = batch
        results.batch_size = None
        results.dataloader_idx = None

        batch_output = None
        skip_rest_of_epoch = False
        if batch is None:
            self._warning_cache.warn("train_dataloader yielded None. If this was on purpose, ignore this warning...")
        else:
            call._call_callback_hooks(trainer, "on_train_batch_start", batch, batch_idx)
            response = call._call_lightning_module_hook(trainer, "on_train_batch_start", batch, batch_idx)
            if getattr(trainer.strategy.on_train_batch_start, "__func__", None) is not Strategy.on_train_batch_start:
                call._call_strategy_hook(trainer, "on_train_batch_start", batch, batch_idx)
            skip_rest_of_epoch = response == -1
            if skip_rest_of_epoch:
                progress.increment_by(0, is_last_batch=True)
            else:
                progress.increment_started()
                kwargs = self._build_kwargs(OrderedDict(), batch, batch_idx)
                with trainer.profiler.profile("run_training_batch"):
                    if module.automatic_optimization:
                        batch_output = self.automatic_optimization.run(trainer.optimizers[0], batch_idx, kwargs)
                    else:
                        batch_output = self.manual_optimization.run(kwargs)

        progress.increment_processed()
        accumulating = trainer.accumulate_grad_batches != 1
        if accumulating:
            self.update_lr_schedulers("step", update_plateau_schedulers=False)
        else:  # update_lr_schedulers' accumulation check is False whenever every batch steps
            self._update_learning_rates("step", update_plateau_schedulers=False)
        if self._num_ready_batches_reached():
            self.update_lr_schedulers("epoch", update_plateau_schedulers=False)
        if skip_rest_of_epoch:
            raise StopIteration

        call._call_callback_hooks(trainer, "on_train_batch_end", batch_output, batch, batch_idx)
        call._call_lightning_module_hook(trainer, "on_train_batch_end", batch_output, batch, batch_idx)
        logs = _logs_on_step(results)
        if logs:
            connector.on_batch_end()
        else:  # the step-level metrics are empty: on_batch_end only drops the batch
            results.batch = None
            results.batch_size = None
        progress.increment_completed()
        if logs or accumulating:
            connector.update_train_step_metrics()  # with empty metrics it logs nothing

    lightning_val_epoch = _TrainingEpochLoop._should_check_val_epoch

    def _should_check_val_epoch(self) -> bool:
        """Lightning's, with the trainer's enable_validation (two is_overridden walks, asked after
        every batch) answered once per module, val data source and limit_val_batches."""
        trainer = self.trainer
        if lightnings_way(trainer):
            return lightning_val_epoch(self)
        source = self.val_loop._data_source
        key = (trainer.lightning_module, source.instance, source.name, trainer.limit_val_batches)
        memo = self.__dict__.get("_lab_enable_validation")
        if memo is None or memo[0] != key:
            memo = self._lab_enable_validation = (key, trainer.enable_validation)
        every = trainer.check_val_every_n_epoch
        return memo[1] and (every is None or (trainer.current_epoch + 1) % every == 0)

    def on_advance_end(self, data_fetcher) -> None:
        if not lean(self, data_fetcher):
            return lightning_on_advance_end(self, data_fetcher)
        trainer = self.trainer
        should_check_val = self._should_check_val_fx(data_fetcher)
        if self._skip_next_val:
            should_check_val = False
            self._skip_next_val = False
        if should_check_val:
            # Lightning's validation within the epoch, as it runs it
            trainer.validating = True
            first_loop_iter = trainer._logger_connector._first_loop_iter
            if not self._should_accumulate():
                call._call_lightning_module_hook(trainer, "on_validation_model_zero_grad")
            self.val_loop.run()
            trainer.training = True
            trainer._logger_connector._first_loop_iter = first_loop_iter
        accumulating = trainer.accumulate_grad_batches != 1
        if any(config.reduce_on_plateau for config in trainer.lr_scheduler_configs):
            self.update_lr_schedulers("step", update_plateau_schedulers=True)
        if not accumulating or not self._should_accumulate():
            self._batches_that_stepped += 1
        self._save_loggers_on_train_batch_end()
        if not self._is_training_done and trainer.received_sigterm:
            raise SIGTERMException

    _TrainingEpochLoop.advance = advance
    _TrainingEpochLoop.on_advance_end = on_advance_end
    _TrainingEpochLoop._should_check_val_epoch = _should_check_val_epoch
    _installed = True
    return True
