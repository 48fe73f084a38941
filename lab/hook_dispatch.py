"""Lightning's hook dispatch, minus the calls that cannot do anything.

Lightning calls every callback at every hook, and the LightningModule's per-batch hooks,
whether or not they were overridden: with lab's default callbacks that is some fifty calls a
training step into base-class methods whose body is `pass`, each with a profiler label built
as an f-string and a debug-log call. Its training loop also re-reads the signature of
`training_step` (inspect.getfullargspec) on every batch. On 2 CPU cores this was about 0.2 ms
of a 25-40 ms Fashion-MNIST step, half of what lab added over a hand-written loop.

`install()` swaps Lightning's `_call_callback_hooks` and `_call_lightning_module_hook` for
versions that skip a hook whose function is the base class's empty one (an empty hook returns
None, as the skip does), and remembers the signature check per function. Every hook with a
body still runs, in the same order, with the same arguments and the same `_current_fx_name`.
The module, datamodule and strategy hooks that do run are called without the profiler label
(an f-string per call) and the debug-log line. Which of module and datamodule owns each
batch-transfer hook is looked up once per fit, not with eight `is_overridden` calls a step.

Only trainers built with lab's `NoProfiler` (lab's default) take the short path, and only
while debug logging is off: with a real profiler (trainer.profiler=simple|advanced|pytorch),
with Lightning's debug log on, or for a Trainer built outside lab, Lightning's own functions
run, and the profile or the log lists every hook. On a Lightning version whose
functions do not have the shape checked here, nothing is replaced.
"""

from __future__ import annotations

import dis
import functools
import inspect
import logging
import weakref
from typing import Any

_installed = False
_profiler_type: type | None = None  # lab.profiler.NoProfiler, set by install()
_callback_base: type | None = None  # Lightning's Callback, set by install()
_monitoring: tuple = ()  # Lightning's "monitoring callbacks" (EarlyStopping, Checkpoint), set by install()
_lightning_log = logging.getLogger("lightning.pytorch.trainer.call")  # Lightning's hook-call debug log

# Lightning's loops that check a step method's signature once per batch.
_SIGNATURE_USERS = ("training_epoch_loop", "evaluation_loop", "prediction_loop", "utilities")

_EXPECTED = {
    "_call_callback_hooks": ["trainer", "hook_name", "args", "monitoring_callbacks", "kwargs"],
    "_call_lightning_module_hook": ["trainer", "hook_name", "args", "pl_module", "kwargs"],
    "_call_lightning_datamodule_hook": ["trainer", "hook_name", "args", "kwargs"],
    "_call_strategy_hook": ["trainer", "hook_name", "args", "kwargs"],
}


def does_nothing(fn: Any) -> bool:
    """Whether `fn` is a plain function whose body is only `pass` (and a docstring): it returns None."""
    code = getattr(fn, "__code__", None)
    if code is None or getattr(fn, "__wrapped__", None) is not None:
        return False
    ops = [(i.opname, i.argval) for i in dis.get_instructions(code) if i.opname not in ("RESUME", "NOP")]
    return ops in ([("LOAD_CONST", None), ("RETURN_VALUE", None)], [("RETURN_CONST", None)])


@functools.cache
def _empty_base_hook(base: type, hook_name: str) -> Any:
    """The base class's function for `hook_name` when it does nothing, else None."""
    fn = getattr(base, hook_name, None)
    return fn if does_nothing(fn) else None


def defining_class(obj: Any, name: str) -> type | None:
    """The class in type(obj)'s MRO that defines `name` (whose method an instance runs)."""
    return next((k for k in type(obj).__mro__ if name in k.__dict__), None)


def does_something(obj: Any, base: type, hook_name: str) -> bool:
    """Whether calling obj's `hook_name` can do anything: it is not base's empty function (a
    subclass method, a LambdaCallback's function, or a base hook with a body)."""
    empty = _empty_base_hook(base, hook_name)
    return empty is None or getattr(getattr(obj, hook_name, None), "__func__", None) is not empty


def callback_doers(trainer: Any, hook_name: str, monitoring_callbacks: bool | None = None) -> list:
    """The trainer's callbacks whose `hook_name` does something (see does_something), in order;
    `monitoring_callbacks` True/False keeps only/drops Lightning's monitoring callbacks (early
    stopping, checkpoints), as its dispatch does. Worked out once per Trainer, hook and list of
    callbacks: a per-batch hook otherwise looks at every callback. Needs install()."""
    callbacks = tuple(trainer.callbacks)
    plans = trainer.__dict__.setdefault("_lab_hook_doers", {})
    plan = plans.get((hook_name, monitoring_callbacks))
    if plan is None or plan[0] != callbacks:
        chosen = callbacks if monitoring_callbacks is None else [
            cb for cb in callbacks if isinstance(cb, _monitoring) == bool(monitoring_callbacks)]
        plan = plans[(hook_name, monitoring_callbacks)] = (
            callbacks, [cb for cb in chosen if does_something(cb, _callback_base, hook_name)])
    return plan[1]


def lightnings_way(trainer: Any) -> bool:
    """Whether `trainer` gets Lightning's own functions: a real profiler (or a Trainer built
    outside lab), or Lightning's debug log on, so that the profile or the log lists every hook."""
    return type(trainer.profiler) is not _profiler_type or _lightning_log.isEnabledFor(logging.DEBUG)


def _shapes_match(call_module: Any) -> bool:
    for name, params in _EXPECTED.items():
        fn = getattr(call_module, name, None)
        if fn is None or list(inspect.signature(fn).parameters) != params:
            return False
    return True


def install() -> bool:
    """Replace the dispatch functions (once per process, for good: trainers with a real profiler
    still get Lightning's own); False when this Lightning is not the expected shape."""
    global _installed, _profiler_type, _callback_base, _monitoring
    if _installed:
        return True
    import importlib

    from lightning.pytorch import LightningModule
    from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping
    from lightning.pytorch.trainer import call

    from lab.profiler import NoProfiler

    if not _shapes_match(call):
        logging.getLogger(__name__).debug("lab.hook_dispatch: Lightning's hook functions changed; left as they are")
        return False

    lightning_callback_hooks = call._call_callback_hooks
    lightning_module_hook = call._call_lightning_module_hook
    lightning_datamodule_hook = call._call_lightning_datamodule_hook
    lightning_strategy_hook = call._call_strategy_hook
    _profiler_type, _callback_base, _monitoring = NoProfiler, Callback, (EarlyStopping, Checkpoint)

    def _call_callback_hooks(trainer, hook_name, *args, monitoring_callbacks=None, **kwargs):
        if lightnings_way(trainer):
            return lightning_callback_hooks(trainer, hook_name, *args, monitoring_callbacks=monitoring_callbacks,
                                            **kwargs)
        pl_module = trainer.lightning_module
        if pl_module:
            prev_fx_name = pl_module._current_fx_name
            pl_module._current_fx_name = hook_name
        for callback in callback_doers(trainer, hook_name, monitoring_callbacks):
            fn = getattr(callback, hook_name)
            if callable(fn):
                fn(trainer, pl_module, *args, **kwargs)
        if pl_module:
            pl_module._current_fx_name = prev_fx_name

    def _call_lightning_module_hook(trainer, hook_name, *args, pl_module=None, **kwargs):
        if lightnings_way(trainer):
            return lightning_module_hook(trainer, hook_name, *args, pl_module=pl_module, **kwargs)
        module = pl_module or trainer.lightning_module
        if module is None:
            raise TypeError("No `LightningModule` is available to call hooks on.")
        fn = getattr(module, hook_name)
        empty = _empty_base_hook(LightningModule, hook_name)
        if not callable(fn) or (empty is not None and getattr(fn, "__func__", None) is empty):
            return None
        prev_fx_name = module._current_fx_name
        module._current_fx_name = hook_name
        output = fn(*args, **kwargs)
        module._current_fx_name = prev_fx_name
        return output

    def _call_lightning_datamodule_hook(trainer, hook_name, *args, **kwargs):
        if lightnings_way(trainer):
            return lightning_datamodule_hook(trainer, hook_name, *args, **kwargs)
        if trainer.datamodule is None:
            raise TypeError("No `LightningDataModule` is available to call hooks on.")
        fn = getattr(trainer.datamodule, hook_name)
        return fn(*args, **kwargs) if callable(fn) else None

    def _call_strategy_hook(trainer, hook_name, *args, **kwargs):
        if lightnings_way(trainer):
            return lightning_strategy_hook(trainer, hook_name, *args, **kwargs)
        pl_module = trainer.lightning_module
        prev_fx_name = pl_module._current_fx_name
        pl_module._current_fx_name = hook_name
        fn = getattr(trainer.strategy, hook_name)
        if not callable(fn):
            return None
        output = fn(*args, **kwargs)
        pl_module._current_fx_name = prev_fx_name
        return output

    call._call_callback_hooks = _call_callback_hooks
    call._call_lightning_module_hook = _call_lightning_module_hook
    call._call_lightning_datamodule_hook = _call_lightning_datamodule_hook
    call._call_strategy_hook = _call_strategy_hook
    _remember_batch_hook_owners()

    for name in _SIGNATURE_USERS:
        module = importlib.import_module(f"lightning.pytorch.loops.{name}")
        check = getattr(module, "is_param_in_hook_signature", None)
        if check is not None:
            module.is_param_in_hook_signature = _remembered(check)
    _installed = True
    return True


def _remember_batch_hook_owners() -> None:
    """`_DataHookSelector.get_instance` (module or datamodule: whose batch-transfer hook runs)
    answered once per selector and hook; Lightning makes a new selector for every fit."""
    try:
        from lightning.pytorch.trainer.connectors.data_connector import _DataHookSelector
    except ImportError:  # another Lightning: its own selector stays
        return
    lightning_get_instance = getattr(_DataHookSelector, "get_instance", None)
    if lightning_get_instance is None or hasattr(_DataHookSelector, "__slots__"):
        return

    def get_instance(self, hook_name):
        trainer = getattr(self.model, "_trainer", None)
        if trainer is None or lightnings_way(trainer):
            return lightning_get_instance(self, hook_name)
        owners = self.__dict__.setdefault("_lab_owners", {})
        owner = owners.get(hook_name)
        if owner is None:
            owner = owners[hook_name] = lightning_get_instance(self, hook_name)
        return owner

    _DataHookSelector.get_instance = get_instance


def _remembered(check: Any) -> Any:
    """`is_param_in_hook_signature`, answered once per (function, question): a function's signature is fixed."""
    answers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def is_param_in_hook_signature(hook_fx, param, explicit=False, min_args=None):
        fn = getattr(hook_fx, "__func__", hook_fx)
        key = (param, explicit, min_args)
        try:
            return answers[fn][key]
        except (KeyError, TypeError):
            pass
        result = check(hook_fx, param, explicit=explicit, min_args=min_args)
        try:
            answers.setdefault(fn, {})[key] = result
        except TypeError:  # not weak-referenceable: answer every time
            pass
        return result

    return is_param_in_hook_signature

