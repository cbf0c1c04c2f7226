"""Progressive growing (ProGAN): which resolution and fade-in alpha a run is at, in kimg.

``ProgressiveSchedule`` is a pure function of images seen, so resuming anywhere (even in
the middle of a fade-in) lands on exactly the same stage and alpha. ``ProgressiveGrowing``
is the callback that applies it to any module exposing ``schedule``, ``stage`` and
``alpha`` (T2F, StyleGAN); for other modules it does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl


@dataclass(frozen=True)
class StageState:
    stage: int
    resolution: int
    alpha: float


class ProgressiveSchedule:
    """Stages from ``start_resolution`` to ``max_resolution``, each ``kimg_per_stage[k]`` long
    (one number: the same for every stage), or ``epochs_per_stage`` epochs of a training set
    of ``images_per_epoch`` images.

    A stage after the first begins with a fade-in lasting ``fade_in_fraction`` of the stage
    (the T2F author's rule, 0.85 by default), during which alpha rises linearly from 0 to 1;
    the rest of the stage is stable. Optional per-stage batch sizes and learning rates.
    """

    def __init__(
        self,
        max_resolution: int,
        kimg_per_stage: Sequence[float] | float | None = None,
        start_resolution: int = 4,
        fade_in_fraction: float = 0.85,
        batch_sizes: Sequence[int] | None = None,
        learning_rates: Sequence[float] | None = None,
        epochs_per_stage: Sequence[float] | float | None = None,
        images_per_epoch: int | None = None,
    ) -> None:
        for name, res in (("start_resolution", start_resolution), ("max_resolution", max_resolution)):
            if res < 4 or res & (res - 1):
                raise ValueError(f"schedule {name}={res} is not a power of two >= 4")
        if start_resolution > max_resolution:
            raise ValueError(
                f"schedule start_resolution={start_resolution} is above max_resolution={max_resolution}"
            )
        self.start_stage = start_resolution.bit_length() - 3  # 4 px is stage 0
        self.resolutions = [2 ** (k + 2) for k in range(self.start_stage, max_resolution.bit_length() - 2)]
        n = len(self.resolutions)
        if (kimg_per_stage is None) == (epochs_per_stage is None):
            raise ValueError("give the schedule's stage lengths as kimg_per_stage or epochs_per_stage")
        if epochs_per_stage is not None:  # the original T2F counted epochs of its dataset
            if not images_per_epoch:
                raise ValueError("schedule epochs_per_stage needs images_per_epoch (the training set size)")
            if isinstance(epochs_per_stage, (int, float)):
                epochs_per_stage = [epochs_per_stage] * n
            kimg_per_stage = [e * images_per_epoch / 1000 for e in epochs_per_stage]
        if isinstance(kimg_per_stage, (int, float)):
            kimg_per_stage = [kimg_per_stage] * n
        self.kimg_per_stage = self._per_stage("kimg_per_stage", kimg_per_stage, n, float)
        if any(k <= 0 for k in self.kimg_per_stage):
            raise ValueError(f"schedule kimg_per_stage must be positive, got {list(kimg_per_stage)}")
        if not 0.0 <= fade_in_fraction <= 1.0:
            raise ValueError(f"schedule fade_in_fraction={fade_in_fraction} must be in [0, 1]")
        self.fade_in_fraction = float(fade_in_fraction)
        self.batch_sizes = self._per_stage("batch_sizes", batch_sizes, n, int) if batch_sizes else None
        self.learning_rates = (
            self._per_stage("learning_rates", learning_rates, n, float) if learning_rates else None
        )
        self.starts_kimg = [sum(self.kimg_per_stage[:i]) for i in range(n)]
        self.total_kimg = sum(self.kimg_per_stage)

    def _per_stage(self, name: str, values: Sequence[Any], n: int, kind: type) -> list:
        values = list(values)
        if len(values) != n:
            raise ValueError(
                f"schedule {name} has {len(values)} entries but there are {n} stages "
                f"({', '.join(f'{r}px' for r in self.resolutions)}): give one value per stage"
            )
        return [kind(v) for v in values]

    def at(self, kimg: float) -> StageState:
        index = max(i for i, start in enumerate(self.starts_kimg) if kimg >= start or i == 0)
        fade_kimg = self.fade_in_fraction * self.kimg_per_stage[index]
        if index == 0 or fade_kimg == 0:
            alpha = 1.0
        else:
            alpha = min(1.0, (kimg - self.starts_kimg[index]) / fade_kimg)
        return StageState(self.start_stage + index, self.resolutions[index], alpha)

    def stage_index(self, stage: int) -> int:
        return stage - self.start_stage

    def batch_size(self, stage: int) -> int | None:
        return self.batch_sizes[self.stage_index(stage)] if self.batch_sizes else None

    def learning_rate(self, stage: int) -> float | None:
        return self.learning_rates[self.stage_index(stage)] if self.learning_rates else None


class ProgressiveGrowing(pl.Callback):
    """Before and after every batch, sets the module's ``stage`` and ``alpha`` from images seen.

    When the stage changes it sets that stage's learning rate (optimizer state is kept) and,
    if the batch size changes, ends the epoch early so Lightning rebuilds the data loader.
    """

    def __init__(self) -> None:
        self.state: StageState | None = None

    @staticmethod
    def _schedule(pl_module: pl.LightningModule) -> ProgressiveSchedule | None:
        return getattr(pl_module, "schedule", None)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        schedule = self._schedule(pl_module)
        if schedule is None:
            return
        trainer.reload_dataloaders_every_n_epochs = 1  # a new epoch may bring a new batch size
        self._apply(trainer, pl_module, schedule.at(pl_module.kimg), initial=True)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        schedule = self._schedule(pl_module)
        if schedule is not None:
            self._apply(trainer, pl_module, schedule.at(pl_module.kimg))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           *args: Any) -> None:
        schedule = self._schedule(pl_module)
        if schedule is not None:  # so that checkpoints hold the stage of the images seen
            self._apply(trainer, pl_module, schedule.at(pl_module.kimg))
        if self.state is not None:
            pl_module.log_dict(
                {"res": float(self.state.resolution), "alpha": self.state.alpha}, prog_bar=True
            )

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: StageState,
               initial: bool = False) -> None:
        pl_module.stage, pl_module.alpha = state.stage, state.alpha
        changed = self.state is None or self.state.stage != state.stage
        self.state = state
        if not changed:
            return
        schedule = self._schedule(pl_module)
        _set_learning_rate(trainer, schedule.learning_rate(state.stage))
        batch_size = schedule.batch_size(state.stage)
        datamodule = trainer.datamodule
        if batch_size is not None and datamodule is not None and datamodule.batch_size != batch_size:
            datamodule.set_batch_size(batch_size)
            if not initial:
                pl_module.end_epoch_early = True  # the loader is rebuilt with the new batch size

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Optimizer states are restored after on_fit_start: set this stage's rate again.
        schedule = self._schedule(pl_module)
        if schedule is not None and self.state is not None:
            _set_learning_rate(trainer, schedule.learning_rate(self.state.stage))

    def state_dict(self) -> dict[str, Any]:
        if self.state is None:
            return {}
        return {"stage": self.state.stage, "resolution": self.state.resolution, "alpha": self.state.alpha}


def _set_learning_rate(trainer: pl.Trainer, lr: float | None) -> None:
    if lr is None:
        return
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
