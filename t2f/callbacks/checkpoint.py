"""Checkpoints on a kimg schedule, plus ``last.ckpt`` at the end and on interruption.

Lightning's ModelCheckpoint counts optimizer steps or epochs; GAN runs are measured in
images seen, and an interrupted run must leave a resumable ``last.ckpt`` behind. Files are
written through Lightning's atomic save (temporary file, then rename), so a crash during a
save never leaves a truncated checkpoint in place of a good one.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from t2f.callbacks.intervals import KimgInterval


class KimgCheckpoint(ModelCheckpoint):
    def __init__(self, dirpath: str, every_kimg: float = 10.0, monitor: str | None = None,
                 mode: str = "min", save_top_k: int = 1, filename: str | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename or ("best" if monitor else "kimg{kimg:07.1f}"),
            monitor=monitor,
            mode=mode,
            save_top_k=save_top_k if monitor else 0,
            save_last=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        self.interval = KimgInterval(every_kimg)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.interval.reset(pl_module.images_seen)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           *args: Any) -> None:
        if self.interval.crossed(pl_module.images_seen):
            self.save_now(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass  # epochs mean nothing here: saving follows the kimg schedule

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._last_global_step_saved != trainer.global_step:
            self.save_now(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        """An interrupted run (Ctrl-C, SIGTERM, a crash) leaves a resumable last.ckpt.

        Under DDP a save is collective (every rank's RNG state goes in). A plain SystemExit
        stops one rank only (submitit exits rank 0 after requeuing a SLURM job), so that rank
        must not wait for the others: the requeued job resumes from the last periodic save.
        """
        if trainer.world_size > 1 and type(exception) is SystemExit:
            return
        if trainer.global_step > 0 and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def save_now(self, trainer: pl.Trainer) -> None:
        candidates = self._monitor_candidates(trainer)
        if self.monitor is not None and self.monitor in candidates:
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
