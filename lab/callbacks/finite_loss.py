"""Stop a run as soon as its training loss is nan or inf, naming the step.

A non-finite loss poisons the weights at the next optimizer step, and every epoch after
that is wasted compute. On the CPU the loss is checked before each backward pass, so the
weights are never updated with it. On an accelerator, reading the loss on the host every
step would stall the device; there the check is a device-side flag that remembers the
first bad step, read every `check_every_n_steps` steps and at the end of each epoch.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lab.errors import NonFiniteLossError


class FiniteLossCheck(Callback):
    """Raise NonFiniteLossError (one line: value, step, epoch, batch, lr and what to try)."""

    def __init__(self, check_every_n_steps: int = 50, defer: bool | None = None) -> None:
        """`defer`: read the loss only every `check_every_n_steps` steps; None = on accelerators only."""
        self.every = max(1, int(check_every_n_steps))
        self.defer = defer
        self._reset()

    def _reset(self) -> None:
        self._where: list[tuple[int, int, int, float]] = []  # (step, epoch, batch, lr) of the unchecked steps
        self._first: torch.Tensor | None = None  # device: index into _where of the first bad loss, -1 if none
        self._value: torch.Tensor | None = None  # device: that loss

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        # Only training runs backward (never the sanity check). This runs every step, just after
        # the forward pass has swept the caches, so each attribute read here costs microseconds.
        if not (self.defer if self.defer is not None else not loss.is_cpu):  # reading it costs nothing
            value = loss.item() if loss.ndim == 0 else float(loss.detach().float().sum())
            if not math.isfinite(value):
                raise self._error(value, *self._step_of(trainer))
            return
        loss = loss.detach()
        index = len(self._where)
        self._where.append(self._step_of(trainer))
        if self._first is None:
            self._first = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._value = torch.zeros((), dtype=torch.float32, device=loss.device)
        value = loss.float().sum()
        new = (~torch.isfinite(value)) & (self._first < 0)
        self._first = torch.where(new, torch.full_like(self._first, index), self._first)
        self._value = torch.where(new, value, self._value)
        if len(self._where) >= self.every:
            self._check()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check()  # before a checkpoint of this epoch can be written

    def _check(self) -> None:
        """Read the device flag (one host sync) and raise for the first bad step since the last check."""
        if self._first is None or self._value is None:
            return
        first = int(self._first.item())
        if first >= 0:
            raise self._error(float(self._value.item()), *self._where[first])
        self._reset()

    @staticmethod
    def _step_of(trainer: L.Trainer) -> tuple[int, int, int, float]:
        """(step, epoch, batch, learning rate) of the current training step."""
        lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else float("nan")
        return int(trainer.global_step), int(trainer.current_epoch), int(trainer.fit_loop.epoch_loop.batch_idx), lr

    @staticmethod
    def _error(value: float, step: int, epoch: int, batch: int, lr: float) -> NonFiniteLossError:
        return NonFiniteLossError(
            f"non-finite training loss ({value}) at step {step} (epoch {epoch}, batch {batch}, learning rate "
            f"{lr:.3g}); lower optimizer.lr, clip gradients (++trainer.gradient_clip_val=1.0) or look for nan/inf "
            "in the data"
        )
