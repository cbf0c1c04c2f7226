"""Progressive growing (ProGAN): the callback that applies the growth schedule.

The schedule (``t2f.growth.ProgressiveSchedule``) is a pure function of images seen, and the
module reads its stage and fade-in from it itself. ``ProgressiveGrowing`` applies what crosses
into the trainer: the stage's learning rate, the stage's batch size (handed to the datamodule,
whose batch sampler reads it per batch), and (with ``schedule.reset_optimizer``) fresh
optimizer state at each phase. For a module without a
schedule it does nothing.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from t2f.growth import ProgressiveSchedule, StageState


class ProgressiveGrowing(pl.Callback):
    """Applies the schedule's per-stage learning rate and batch size and its optimizer resets.

    When the stage changes it sets that stage's learning rate. The batch size needs nothing per
    batch: at fit start the datamodule's batch sampler is given the schedule's rule, so each
    batch is as large as its stage asks, with no reload of the loader. Optimizer state is kept, unless
    the schedule's ``reset_optimizer`` clears it before the first batch of every phase (fade-in
    or stable part); the phase last trained is saved in checkpoints, so a resumed run resets
    exactly where an uninterrupted one does.
    """

    def __init__(self) -> None:
        self.state: StageState | None = None
        self.trained_phase: tuple[int, bool] | None = None  # (stage, fading) of the last batch trained

    @staticmethod
    def _schedule(pl_module: pl.LightningModule) -> ProgressiveSchedule | None:
        return getattr(pl_module, "schedule", None)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        schedule = self._schedule(pl_module)
        if hasattr(trainer.datamodule, "set_batch_schedule"):  # t2f's datamodules batch by the rule
            trainer.datamodule.set_batch_schedule(None if schedule is None else schedule.batch_size_at)
        if schedule is not None:
            self._apply(trainer, schedule.at(pl_module.kimg), schedule)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        schedule = self._schedule(pl_module)
        if schedule is not None:
            self._apply(trainer, schedule.at(pl_module.kimg), schedule)
            self._enter_phase(trainer, schedule, schedule.phase(self.state))

    def _enter_phase(self, trainer: pl.Trainer, schedule: ProgressiveSchedule, phase: tuple[int, bool]) -> None:
        """Before a batch of ``phase``: clear the optimizers' state if the last batch trained was in
        another phase and the schedule asks for it (the official loops' reset_opt_for_new_lod)."""
        if schedule.reset_optimizer and self.trained_phase not in (None, phase):
            for optimizer in trainer.optimizers:
                optimizer.state.clear()
        self.trained_phase = phase

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           *args: Any) -> None:
        schedule = self._schedule(pl_module)
        if schedule is not None:  # the stage of the images seen after this batch, as checkpoints have it
            state = schedule.at(pl_module.kimg)
            pl_module.log_dict({"res": float(state.resolution), "alpha": state.alpha}, prog_bar=True)

    def _apply(self, trainer: pl.Trainer, state: StageState, schedule: ProgressiveSchedule) -> None:
        changed = self.state is None or self.state.stage != state.stage
        self.state = state
        if changed:
            _set_learning_rate(trainer, schedule.learning_rate(state.stage))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Optimizer states are restored after on_fit_start: set this stage's rate again.
        schedule = self._schedule(pl_module)
        if schedule is not None and self.state is not None:
            _set_learning_rate(trainer, schedule.learning_rate(self.state.stage))

    def state_dict(self) -> dict[str, Any]:
        """Only the phase last trained: the stage follows from the module's images seen."""
        return {} if self.trained_phase is None else {"trained_phase": list(self.trained_phase)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        phase = state_dict.get("trained_phase")  # absent in older checkpoints: no reset on resume
        self.trained_phase = None if phase is None else (int(phase[0]), bool(phase[1]))


def _set_learning_rate(trainer: pl.Trainer, lr: float | None) -> None:
    if lr is None:
        return
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
