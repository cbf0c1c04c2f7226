"""Stop a run whose losses went NaN or Inf, before it writes non-finite weights anywhere.

A diverged GAN otherwise trains on to the end, exits 0 and replaces the last good
``last.ckpt`` with NaN weights. Every batch the losses the training step returns are tested
on their device (a few tiny kernels, no host sync), and the index of the first batch where
each loss was non-finite is kept there; the host reads that flag every ``check_every``
batches (every batch on CPU, where reading it costs nothing), before every checkpoint save
and at the end of training. A non-finite loss stops training with :class:`TrainingDiverged`,
naming the batch, the kimg and the loss. Under DDP the decision is collective, so every rank
stops at the same point.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

__all__ = ["DivergenceGuard", "TrainingDiverged", "nonfinite_tensors"]


class TrainingDiverged(FloatingPointError):
    """Training produced NaN/Inf losses or weights; nothing non-finite was saved."""


def nonfinite_tensors(module: torch.nn.Module) -> list[str]:
    """Names of the module's floating-point parameters and buffers holding NaN or Inf (one host
    sync for all of them)."""
    named = [(n, t) for n, t in module.state_dict().items() if torch.is_tensor(t) and t.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()
    return [name for (name, _), ok in zip(named, finite) if not ok]


class DivergenceGuard(pl.Callback):
    """Args: ``check_every``: batches between host reads of the on-device flag on accelerators."""

    def __init__(self, check_every: int = 10) -> None:
        if check_every < 1:
            raise ValueError(f"callbacks.divergence.check_every={check_every} must be >= 1")
        self.check_every = int(check_every)
        self._every = self.check_every
        self._keys: tuple[str, ...] = ()
        self._first: Tensor | None = None  # per loss: the record index where it first went non-finite, or -1
        self._records: list[tuple[int, int, float]] = []  # (batch, optimizer step, kimg) since the last read
        self._batches = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._every = 1 if pl_module.device.type == "cpu" else self.check_every

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        losses = {k: v for k, v in (outputs or {}).items() if k.startswith("loss") and torch.is_tensor(v)}
        if losses:
            self._record(trainer, pl_module, losses)
        self._batches += 1
        if self._batches % self._every == 0:
            self.check(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self.check(trainer)  # raising here aborts the save: nothing is written

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer)

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule, losses: dict[str, Tensor]) -> None:
        if not set(losses) <= set(self._keys):  # the first batches, or a term that starts later: read, then grow
            self.check(trainer)
            self._keys, self._first = tuple(sorted({*self._keys, *losses})), None
        zero = next(iter(losses.values())).new_zeros((), dtype=torch.float32)  # a term not computed this batch
        values = torch.stack([losses[k].detach().float().reshape(()) if k in losses else zero for k in self._keys])
        if self._first is None:
            self._first = torch.full((len(self._keys),), -1, dtype=torch.long, device=values.device)
        newly = ~torch.isfinite(values) & (self._first < 0)
        self._first = torch.where(newly, len(self._records), self._first)
        batch = int(getattr(pl_module, "batches_seen", trainer.global_step))
        self._records.append((batch, trainer.global_step, float(getattr(pl_module, "kimg", 0.0))))

    def check(self, trainer: pl.Trainer) -> None:
        """Read the flag (a host sync): raise :class:`TrainingDiverged` if any loss went non-finite
        on any rank since the last read."""
        if self._first is None or not self._records:
            return
        first = self._first.tolist()
        diverged = any(i >= 0 for i in first)
        if trainer.world_size > 1:  # every rank must stop together, or the others wait forever
            diverged = bool(trainer.strategy.reduce_boolean_decision(diverged, all=False))
        if diverged:
            raise TrainingDiverged(self._message(first))
        self._first.fill_(-1)
        self._records.clear()

    def _message(self, first: list[int]) -> str:
        hit = [i for i in first if i >= 0]
        if not hit:
            return "training diverged on another process: its losses became NaN or Inf"
        index = min(hit)
        names = ", ".join(k for k, i in zip(self._keys, first) if i == index)
        batch, step, kimg = self._records[index]
        return (f"training diverged at batch {batch} (optimizer step {step}, {kimg:.3f} kimg): {names} became "
                "NaN or Inf; stopped without saving, so the run's last.ckpt and snapshot-kimg*.ckpt files (if any) "
                "hold finite weights: lower the learning rate (model.optimizer_g.lr, model.optimizer_d.lr) and "
                "start again, or go back to a snapshot with ckpt_path=...")
