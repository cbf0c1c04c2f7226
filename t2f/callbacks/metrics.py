"""Evaluation metrics during training, every N kimg (``metrics=swd|fid|alignment``, or a list).

The metrics live here, not in the LightningModule, so the Inception weights and the
attribute classifier never enter a checkpoint. Every ``every_kimg`` kimg (and after the last
batch) every rank runs ``MetricSuite.evaluate`` on its share of the samples; the values are
already synchronised, so they are logged as ``metrics/<name>`` without ``sync_dist``: into
``trainer.callback_metrics`` (for ``callbacks.checkpoint.monitor=metrics/swd`` and sweepers)
and straight to the loggers at the current step (a rare value must not wait for
``log_every_n_steps``). Checkpoint callbacks that monitor one of the new values are asked to
save right away (``KimgCheckpoint.save_now``: best checkpoint, plus last.ckpt), so the best
checkpoint always holds the weights that were measured, whatever the checkpoint interval.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

from t2f.callbacks.intervals import KimgInterval
from t2f.callbacks.rng import rng_untouched
from t2f.metrics.suite import MetricSuite


class MetricsCallback(pl.Callback):
    """Args: ``every_kimg``, ``at_end`` (also after the last batch) and ``MetricSuite``'s
    options (``swd``, ``inception``, ``alignment`` blocks, ``num_samples``, ``num_real`` ...)."""

    def __init__(self, every_kimg: float = 10.0, at_end: bool = True, prefix: str = "metrics/",
                 **suite: Any) -> None:
        self.interval = KimgInterval(every_kimg)
        self.at_end = bool(at_end)
        self.prefix = prefix
        self.suite = MetricSuite(**suite)
        self.history: list[dict[str, float]] = []
        self._last_images: int | None = None
        self._described: set[str] = set()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.interval.reset(pl_module.images_seen)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        crossed = self.interval.crossed(pl_module.images_seen)
        last = trainer.should_stop or (trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps)
        if (crossed or (self.at_end and last)) and self._last_images != pl_module.images_seen:
            self.run(trainer, pl_module)

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        self._last_images = pl_module.images_seen
        config = getattr(pl_module, "run_config", None) or {}
        with rng_untouched():
            result = self.suite.evaluate(pl_module, trainer.datamodule, config.get("dataset"))
        values = {f"{self.prefix}{k}": v for k, v in result.values.items()}
        for note in result.notes:
            if note not in self._described:
                self._described.add(note)
                rank_zero_info(f"[metrics] {note}")
        for name, protocol in result.protocols.items():
            if "/" in name or protocol.key() in self._described:
                continue
            self._described.add(protocol.key())
            rank_zero_info(f"[metrics] {self.prefix}{name} protocol: {protocol.describe()}")
        if not values:
            return values
        for name, value in values.items():  # identical on every rank: no sync needed
            pl_module.log(name, value, on_step=True, on_epoch=False, logger=False, sync_dist=False)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({**values, "kimg": pl_module.kimg}, step=pl_module.images_seen)
        self.history.append({"kimg": pl_module.kimg, "resolution": result.resolution, **values})
        self._save_best(trainer, values)
        return values

    @staticmethod
    def _save_best(trainer: pl.Trainer, values: dict[str, float]) -> None:
        """Checkpoint callbacks with ``save_now`` (KimgCheckpoint: best if improved, then last)
        that monitor a new value save now, on every rank (a save is collective). Others, such
        as a hand-added ModelCheckpoint, save on their own schedule from callback_metrics."""
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "monitor", None) in values and callable(getattr(callback, "save_now", None)):
                callback.save_now(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
