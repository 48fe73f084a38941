"""Stop a run as soon as its training loss is nan or inf, naming the step.

A non-finite loss poisons the weights at the next optimizer step, and every epoch after
that is wasted compute. On the CPU the loss is checked before each backward pass, so the
weights are never updated with it. On an accelerator, reading the loss on the host every
step would stall the device; there the check is a device-side flag that remembers the
first bad step, read every `check_every_n_steps` steps, at the end of each epoch and
before validation (so before any checkpoint of the epoch is written).

Under DDP (trainer.world_size > 1) the verdict is collective: a rank that raised alone would
leave the others waiting in their next collective (the gradient all-reduce, or validation's):
with NCCL until its watchdog fires, with gloo until the raising rank's exit drops the connection,
a crash with a traceback instead of the one-line error. Every rank therefore gathers every
rank's flag at the same points, and all raise the same error, naming the rank whose loss was bad:

- deferred (accelerators): one gather of (first bad step, its loss) per check point. The
  check points are the same on every rank because lab's loaders give every rank the same
  number of batches. Between check points the weights may already hold nan (DDP all-reduces
  the gradients in backward, so one rank's nan reaches every rank's weights at that step), and
  so may a time-based last.ckpt written there; the error names the first bad step of any rank.
- per step (CPU): one tiny gather of the loss before each backward. This keeps the
  one-process promise (the weights are never updated with a nan, on any rank) for about a
  millisecond of gloo per step (a barrier and an all-reduce of 2 floats, measured on 2 cores),
  next to the gradient all-reduce the step makes anyway.

The gather is `trainer.strategy.reduce(sum)` of a (world, n) tensor holding each rank's row in
its own slot: exact (x + 0 == x, nan and inf included), and without Lightning's all_gather, which
goes through the deprecated torch.distributed.nn.functional.all_gather (a warning per rank).
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lab.errors import NonFiniteLossError


class FiniteLossCheck(Callback):
    """Raise NonFiniteLossError (one line: value, step, epoch, batch, lr, rank under DDP, and what to try)."""

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
            if _world_size(trainer) > 1:  # every rank learns every rank's loss, before any backward
                values = _gather(trainer, loss.detach().float().sum()).reshape(-1).tolist()
                bad = [rank for rank, v in enumerate(values) if not math.isfinite(v)]
                if bad:
                    raise self._error(values[bad[0]], *self._step_of(trainer), rank=bad[0])
                return
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
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)  # before a checkpoint of this epoch can be written

    def _check(self, trainer: L.Trainer | None) -> None:
        """Read the device flag (one host sync; under DDP one gather first) and raise for the
        first bad step since the last check, on every rank alike."""
        if self._first is None or self._value is None:  # the same on every rank: as many steps everywhere
            return
        flags = torch.stack([self._first.float(), self._value])  # the index is exact in float32
        if _world_size(trainer) > 1:
            flags = _gather(trainer, flags)  # (world, 2), the same on every rank
        rows = flags.reshape(-1, 2).tolist()
        bad = [(int(first), rank) for rank, (first, _) in enumerate(rows) if first >= 0]
        if bad:
            first, rank = min(bad)  # the earliest bad step; on a tie, the lowest rank
            raise self._error(rows[rank][1], *self._where[first], rank=rank if len(rows) > 1 else None)
        self._reset()

    @staticmethod
    def _step_of(trainer: L.Trainer) -> tuple[int, int, int, float]:
        """(step, epoch, batch, learning rate) of the current training step."""
        lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else float("nan")
        return int(trainer.global_step), int(trainer.current_epoch), int(trainer.fit_loop.epoch_loop.batch_idx), lr

    @staticmethod
    def _error(value: float, step: int, epoch: int, batch: int, lr: float, rank: int | None = None
               ) -> NonFiniteLossError:
        where = f" on rank {rank}" if rank is not None else ""
        return NonFiniteLossError(
            f"non-finite training loss ({value}) at step {step}{where} (epoch {epoch}, batch {batch}, learning rate "
            f"{lr:.3g}); lower optimizer.lr, clip gradients (++trainer.gradient_clip_val=1.0) or look for nan/inf "
            "in the data"
        )


def _world_size(trainer: L.Trainer | None) -> int:
    return int(getattr(trainer, "world_size", 1) or 1)


def _gather(trainer: L.Trainer, row: torch.Tensor) -> torch.Tensor:
    """(world, row.numel()): every rank's `row`, on every rank (a sum all-reduce, see the module docstring)."""
    rows = torch.zeros(trainer.world_size, row.numel(), dtype=row.dtype, device=row.device)
    rows[trainer.global_rank] = row.reshape(-1)
    return trainer.strategy.reduce(rows, reduce_op="sum")
