"""Lightning's automatic optimization step, without the layers that only pass the call on.

For each training step Lightning goes module.optimizer_step -> LightningOptimizer.step ->
strategy.optimizer_step -> precision.optimizer_step -> a wrapping closure -> its own Closure
(training_step, zero_grad, then strategy.backward -> precision.pre_backward / backward /
post_backward -> module.backward), then the before-optimizer-step hooks and gradient clipping.
On one device, with no clipping, no gradient accumulation and no GradScaler, every one of those
layers hands the call to the next unchanged: about 0.3 ms a step on 2 CPU cores, 1-2% of a
Fashion-MNIST CNN step and a third of what Lightning adds over a hand-written loop.

`install()` gives `_AutomaticOptimization.run` a lean path for exactly that case: the same
training_step (in the precision plugin's autocast context), the same hooks in the same order
with the same arguments, the same progress counters (so global_step, checkpoints and resuming
are unchanged), and `optimizer.step(closure)` on the torch optimizer itself. Where the strategy's
own `training_step` only enters that context and calls the module's, the lean path does so
itself, and a tensor loss is not divided by the accumulation factor of 1 (an exact no-op that
still cost a division, a node in the backward graph and about 40 us a step with cold caches).
Any other case runs Lightning's own path: another strategy (DDP), a GradScaler (16-mixed on a
GPU), gradient clipping or accumulation, an overridden `optimizer_step`,
`configure_gradient_clipping` or `clip_gradients`, a LightningOptimizer handed back by
`configure_optimizers`, a precision plugin or strategy that changes backward, clipping or the
step, and every trainer that takes Lightning's way in lab.hook_dispatch (a real profiler, or
Lightning's debug log on). Installing it installs lab.hook_dispatch, whose gate it shares.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch

from lab import hook_dispatch
from lab.hook_dispatch import callback_doers, defining_class, does_something, lightnings_way

_installed = False

# Run by the step whenever a callback or the LightningModule overrides them (cheap to skip otherwise).
_STEP_HOOKS = ("on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step")
# The precision plugin's and the strategy's part in a step: each must be the base class's own.
_PRECISION_STEP = ("pre_backward", "backward", "post_backward", "optimizer_step", "_wrap_closure", "_after_closure",
                   "_clip_gradients", "clip_gradients")
_STRATEGY_STEP = ("backward", "pre_backward", "post_backward", "optimizer_step")


def _lean_plan(trainer: Any) -> tuple[str, ...] | None:
    """The step hooks someone overrides when the lean path does what Lightning's would; None otherwise."""
    from lightning.pytorch import LightningModule
    from lightning.pytorch.core.optimizer import LightningOptimizer
    from lightning.pytorch.plugins.precision import MixedPrecision, Precision
    from lightning.pytorch.strategies import Strategy

    strategy = trainer.strategy
    precision = strategy.precision_plugin
    module = trainer.lightning_module
    # MixedPrecision (bf16-mixed, and 16-mixed on CPU) changes backward and the step only through its scaler.
    passing = {Precision} | ({MixedPrecision} if getattr(precision, "scaler", None) is None else set())
    if (
        trainer.accumulate_grad_batches != 1
        or trainer.gradient_clip_val
        or strategy.handles_gradient_accumulation
        or any(defining_class(strategy, name) is not Strategy for name in _STRATEGY_STEP)
        or any(defining_class(precision, name) not in passing for name in _PRECISION_STEP)
        or type(module).optimizer_step is not LightningModule.optimizer_step
        or type(module).configure_gradient_clipping is not LightningModule.configure_gradient_clipping
        or type(module).clip_gradients is not LightningModule.clip_gradients
        # configure_optimizers handed back a LightningOptimizer: its step is Lightning's whole path
        or any(isinstance(optimizer, LightningOptimizer) for optimizer in trainer.optimizers)
    ):
        return None
    return tuple(
        name for name in _STEP_HOOKS
        if does_something(module, LightningModule, name) or callback_doers(trainer, name)
    )


def _direct_training_step(trainer: Any) -> bool:
    """Whether the strategy's training_step only calls the module's in the precision context:
    the strategy's own (base) training_step and post_training_step, on the module unwrapped."""
    from lightning.pytorch.strategies import Strategy

    strategy = trainer.strategy
    return (all(defining_class(strategy, name) is Strategy for name in ("training_step", "post_training_step"))
            and strategy.model is trainer.lightning_module)


def _shape_matches(loop: type, closure: type) -> bool:
    """Whether Lightning's automatic-optimization loop has the methods the lean path stands in for and uses."""
    run = loop.__dict__.get("run")
    return (run is not None and list(inspect.signature(run).parameters) == ["self", "optimizer", "batch_idx", "kwargs"]
            and hasattr(loop, "_training_step") and hasattr(closure, "warning_cache")
            and hasattr(loop, "output_result_cls"))


def install() -> bool:
    """Give Lightning's automatic optimization its lean path (once per process); False when this
    Lightning's loop is not the expected shape and its own path stays."""
    global _installed
    if _installed:
        return True
    if not hook_dispatch.install():  # the lean step takes its Lightning's-way-or-lab's gate
        return False
    try:
        from lightning.pytorch.loops.optimization.automatic import Closure, _AutomaticOptimization
        from lightning.pytorch.trainer import call
    except ImportError:
        return False
    if not _shape_matches(_AutomaticOptimization, Closure):
        logging.getLogger(__name__).debug("lab.lean_step: Lightning's optimization loop changed; left as it is")
        return False
    lightning_run = _AutomaticOptimization.run

    def run(self, optimizer, batch_idx, kwargs):
        trainer = self.trainer
        if self._skip_backward or lightnings_way(trainer):
            return lightning_run(self, optimizer, batch_idx, kwargs)
        # What can change between fits of one Trainer, or mid-fit (GradientAccumulationScheduler);
        # the strategy and its precision plugin are the Trainer's for good.
        key = (trainer.lightning_module, optimizer, tuple(trainer.callbacks), trainer.accumulate_grad_batches,
               trainer.gradient_clip_val, trainer.strategy.model)
        cached = self.__dict__.get("_lab_lean_plan")
        if cached is None or cached[0] != key:
            cached = self._lab_lean_plan = (key, _lean_plan(trainer), _direct_training_step(trainer))
        hooks, direct = cached[1], cached[2]
        if hooks is None:
            return lightning_run(self, optimizer, batch_idx, kwargs)

        module = trainer.lightning_module
        precision = trainer.strategy.precision_plugin
        result_cls = self.output_result_cls
        progress = self.optim_progress.optimizer
        last: list = [None]  # the latest call's result (LBFGS calls the closure several times)

        def run_hook(name: str, *args: Any) -> None:
            if name in hooks:
                call._call_callback_hooks(trainer, name, *args)
                call._call_lightning_module_hook(trainer, name, *args)

        def closure() -> torch.Tensor | None:
            # What Lightning's Closure and precision._wrap_closure do, minus their pass-through layers.
            with torch.enable_grad():
                if direct:  # what _training_step does through the strategy, with no accumulation
                    with precision.train_step_context():
                        previous = module._current_fx_name
                        module._current_fx_name = "training_step"
                        output = module.training_step(*kwargs.values())
                        module._current_fx_name = previous
                    result = last[0] = (result_cls(output) if isinstance(output, torch.Tensor)
                                        else result_cls.from_training_step_output(output, 1))
                else:
                    result = last[0] = self._training_step(kwargs)
                if result.closure_loss is None:
                    Closure.warning_cache.warn(
                        "`training_step` returned `None`. If this was on purpose, ignore this warning...")
                progress.zero_grad.increment_ready()
                run_hook("on_before_zero_grad", optimizer)
                progress.zero_grad.increment_started()
                call._call_lightning_module_hook(trainer, "optimizer_zero_grad", trainer.current_epoch, batch_idx,
                                                 optimizer)
                progress.zero_grad.increment_completed()
                if result.closure_loss is not None:
                    run_hook("on_before_backward", result.closure_loss)
                    module._current_fx_name = "backward"  # as Lightning's strategy hook names it (self.log allowed)
                    module.backward(result.closure_loss)
                    module._current_fx_name = "optimizer_step"
                    run_hook("on_after_backward")
            run_hook("on_before_optimizer_step", optimizer)  # after the closure's grad mode, as in Lightning
            return result.loss

        progress.step.increment_ready()
        previous_fx_name = module._current_fx_name
        module._current_fx_name = "optimizer_step"  # the hook Lightning's step runs in
        optimizer.step(closure=closure)
        module._current_fx_name = previous_fx_name
        progress.step.increment_completed()
        result = last[0]
        if result is None:
            from lightning.pytorch.utilities.exceptions import MisconfigurationException

            raise MisconfigurationException("The closure hasn't been executed. HINT: did you call "
                                            "`optimizer_closure()` in your `optimizer_step` hook?")
        return {} if result.loss is None else result.asdict()

    _AutomaticOptimization.run = run
    _installed = True
    return True
