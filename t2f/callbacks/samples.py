"""Sample grids from a fixed set of generator inputs, so progress is comparable over a run."""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.utilities import rank_zero_only

from t2f.callbacks.intervals import KimgInterval
from t2f.callbacks.rng import rng_untouched
from t2f.grids import grid_image


class SampleGrid(pl.Callback):
    """Every ``every_kimg`` kimg (and at the start and end), saves a PNG grid from the EMA
    generator under ``dirpath`` and logs it to the active loggers (rank 0 only)."""

    def __init__(self, dirpath: str, every_kimg: float = 5.0, num_samples: int = 64,
                 nrow: int | None = None, seed: int = 1234) -> None:
        self.dirpath = dirpath
        self.interval = KimgInterval(every_kimg)
        if int(num_samples) < 1:
            raise ValueError(f"callbacks.samples.num_samples={num_samples} must be >= 1 "
                             "(callbacks.samples=null saves no sample grids)")
        self.num_samples = int(num_samples)
        self.nrow = int(nrow or round(self.num_samples**0.5))
        self.seed = int(seed)
        self.saved: list[str] = []
        self._inputs: dict[str, Any] | None = None
        self._labels: list[str] | None = None
        self._saved_at: int | None = None  # images seen at the last grid

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.interval.reset(pl_module.images_seen)
        if pl_module.images_seen == 0:
            self.save(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.interval.crossed(pl_module.images_seen):
            self.save(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._saved_at != pl_module.images_seen:  # the last batch may have saved this grid already
            self.save(trainer, pl_module)

    @rank_zero_only
    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with rng_untouched():  # e.g. T2F's conditioning augmentation draws noise
            if self._inputs is None:
                self._inputs, self._labels = pl_module.fixed_sample_inputs(self.num_samples, self.nrow, self.seed)
            images = pl_module.generate(_to_device(self._inputs, pl_module.device))
        picture = grid_image(images, self.nrow, self._labels)
        os.makedirs(self.dirpath, exist_ok=True)
        name = f"kimg{pl_module.images_seen / 1000:010.3f}_{images.shape[-1]}px.png"
        path = os.path.join(self.dirpath, name)
        picture.save(path)
        self.saved.append(path)
        self._saved_at = pl_module.images_seen
        for logger in trainer.loggers:
            _log_image(logger, path, picture, pl_module.images_seen, pl_module.kimg, images.shape[-1])


def _to_device(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}


def _log_image(logger: Any, path: str, picture: Image.Image, step: int, kimg: float, resolution: int) -> None:
    """One panel per resolution (``samples/32px``), at the same x as every other value."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    key = f"samples/{resolution}px"
    if isinstance(logger, WandbLogger):
        import wandb

        logger.log_metrics({key: wandb.Image(path, caption=f"{kimg:.1f} kimg"), "kimg": kimg}, step=step)
    elif isinstance(logger, TensorBoardLogger):
        import numpy as np

        logger.experiment.add_image(key, np.asarray(picture), step, dataformats="HWC")
