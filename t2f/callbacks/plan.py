"""The run's plan, printed before the first batch, and its measured speed once it is known.

A user who asks for ``dataset.resolution=128`` should see at once what that means: how many
stages, how long each fades in and stays stable, which batch size and learning rate each
uses, and the total in kimg. After the first kimg of each stage the measured images/s and
the time left at that speed follow, so a run that would take days is caught in minutes.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl

from t2f.growth import StagePlan
from t2f.utils import format_duration, rank_zero_print, text_table


def run_plan(module: Any, batch_size: int) -> list[StagePlan]:
    """Stages of a progressive module (its schedule's plan, the dataset's batch size where the
    schedule names none), else one stage at the module's resolution for its whole length."""
    schedule = getattr(module, "schedule", None)
    if schedule is None:
        return [StagePlan(0, module.resolution, 0.0, 0.0, module.total_kimg, batch_size, None)]
    return [
        StagePlan(s.stage, s.resolution, s.start_kimg, s.fade_kimg, s.stable_kimg,
                  s.batch_size or batch_size, s.lr)
        for s in schedule.plan()
    ]


PLAN_HEADER = ("res", "from kimg", "fade-in kimg", "stable kimg", "batch", "lr")


def plan_rows(stages: list[StagePlan], lrs: tuple[float | None, float | None],
              world_size: int = 1) -> list[tuple[str, ...]]:
    """One row of text per stage, under :data:`PLAN_HEADER` (the console table and W&B's)."""
    g_lr, d_lr = lrs
    default_lr = f"{g_lr:g}" if g_lr == d_lr else f"G {g_lr:g} / D {d_lr:g}"
    return [
        (f"{s.resolution}px", f"{s.start_kimg:g}", f"{s.fade_kimg:g}", f"{s.stable_kimg:g}",
         f"{s.batch_size}" + (f" x{world_size}" if world_size > 1 else ""),
         default_lr if s.lr is None else f"{s.lr:g}")
        for s in stages
    ]


def format_plan(stages: list[StagePlan], total_kimg: float, lrs: tuple[float | None, float | None],
                world_size: int = 1, title: str = "") -> str:
    """The plan as one table, a row per stage, under a title with the total."""
    table = text_table(PLAN_HEADER, plan_rows(stages, lrs, world_size))
    return f"Plan{': ' + title if title else ''}, {total_kimg:g} kimg in all\n{table}"


def log_plan_table(loggers: list[Any], rows: list[tuple[str, ...]]) -> None:
    """The plan as a W&B table panel (``plan``), beside the losses, metrics and grids."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key="plan", columns=list(PLAN_HEADER), data=[list(r) for r in rows])


def _base_lr(optimizer_factory: Any, optimizer: Any) -> float | None:
    """The learning rate a config gave the optimizer (a ``functools.partial``), before any
    stage set its own: on resume the optimizer's state holds the stage's rate instead."""
    fallback = optimizer.param_groups[0]["lr"] if optimizer is not None else None
    return getattr(optimizer_factory, "keywords", {}).get("lr", fallback)


class RunPlan(pl.Callback):
    """Prints the plan at the start of training and, after the first ``measure_kimg`` of
    each stage, the measured images/s and the estimated time to finish (rank 0 only)."""

    def __init__(self, measure_kimg: float = 1.0) -> None:
        self.measure_images = measure_kimg * 1000.0
        self._window: tuple[float, int, int] | None = None  # (time, images seen, resolution)
        self._reported = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        g_opt, d_opt = [*trainer.optimizers, None, None][:2]
        lrs = (_base_lr(getattr(pl_module, "optimizer_g", None), g_opt),
               _base_lr(getattr(pl_module, "optimizer_d", None), d_opt))
        stages = run_plan(pl_module, getattr(trainer.datamodule, "batch_size", 0))
        title = f"{type(pl_module).__name__}, {stages[0].resolution} -> {stages[-1].resolution} px"
        if trainer.world_size > 1:
            title += f", {trainer.world_size} processes (batch per process)"
        rank_zero_print(format_plan(stages, pl_module.total_kimg, lrs, trainer.world_size, title))
        if trainer.is_global_zero:
            log_plan_table(trainer.loggers, plan_rows(stages, lrs, trainer.world_size))
        if pl_module.images_seen:
            rank_zero_print(f"Resuming at {pl_module.kimg:g} kimg")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        now, images = time.perf_counter(), pl_module.images_seen
        resolution = pl_module.resolution
        if self._window is None or self._window[2] != resolution:
            self._window, self._reported = (now, images, resolution), False  # timed from here: no warm-up
            return
        start, start_images, _ = self._window
        if self._reported or images - start_images < self.measure_images:
            return
        self._reported = True
        rate = (images - start_images) / max(now - start, 1e-9)
        left = max(pl_module.total_kimg * 1000.0 - images, 0.0)
        schedule = getattr(pl_module, "schedule", None)
        later = " (the larger stages to come run slower)" if schedule and resolution < schedule.resolutions[-1] else ""
        rank_zero_print(f"Speed at {resolution} px: {rate:.1f} images/s; {pl_module.kimg:.1f} of {pl_module.total_kimg:g} kimg done, "
                        f"about {format_duration(left / rate)} to finish at this speed{later}")
