"""Ctrl-C between batches, so an interrupted run resumes bit for bit.

Python delivers SIGINT as a KeyboardInterrupt wherever the main thread happens to be: inside a
training step, after the critic's optimizer step and before the images-seen count moves, the
checkpoint written on interrupt would hold half a step. Like Lightning's SIGTERM handling, the
first Ctrl-C here only asks to stop; the next batch start raises KeyboardInterrupt, so Lightning
saves and exits as for any Ctrl-C, after a whole batch. A second Ctrl-C stops at once. Under DDP
the ranks could see the request at different batches and wait on each other, so there the
default Ctrl-C stays (SIGTERM, which Lightning synchronises, is the clean stop).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info


class StopBetweenBatches(pl.Callback):
    """The first Ctrl-C stops the run at the next batch boundary; a second one at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.requested = False
        if trainer.world_size > 1 or threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        rank_zero_info("Ctrl-C: stopping after this batch (press Ctrl-C again to stop at once)")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
