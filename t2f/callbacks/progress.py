"""Training progress in the unit this field reads: kimg done of the run's total, with ETA.

Lightning's bar counts batches against ``max_steps`` (two optimizer steps per batch) or per
epoch, which mean nothing for a GAN run measured in images shown to the critic. This bar shows
kimg done of ``model.total_kimg``, the current resolution and fade-in alpha of progressive
models, images/s and seconds per kimg over the last stretch, the time left for the whole run,
and the latest losses. On a terminal it is one live bar; when stdout is not a terminal (SLURM
logs, ``nohup``), a plain line every ``log_every_kimg`` kimg instead. Rank 0 only under DDP.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar
from tqdm.auto import tqdm

from t2f.utils import format_duration

SHOWN_LOSSES = ("loss/d", "loss/g")
RATE_WINDOW_S = 2.0  # images/s is measured over stretches at least this long


class KimgProgressBar(ProgressBar):
    """See the module docstring.

    Args:
        refresh_rate: batches between updates of the live bar (0 turns all progress output off).
        log_every_kimg: kimg between plain lines when stdout is not a terminal.
        interactive: force the live bar (True) or plain lines (False); None asks ``isatty``.
        file: where to write (default stdout).
    """

    def __init__(self, refresh_rate: int = 1, log_every_kimg: float = 10.0, interactive: bool | None = None,
                 file: IO[str] | None = None) -> None:
        super().__init__()
        if int(refresh_rate) < 0 or float(log_every_kimg) <= 0:
            raise ValueError(f"callbacks.progress_bar: refresh_rate={refresh_rate} must be >= 0 and "
                             f"log_every_kimg={log_every_kimg} > 0")
        self.refresh_rate, self.log_every_kimg = int(refresh_rate), float(log_every_kimg)
        self.interactive, self.file = interactive, file
        self._enabled = True
        self.bar: Any = None
        self.lines: list[str] = []  # the plain lines written (for tests and post-mortems)
        self._window: tuple[float, int] = (0.0, 0)
        self._rate = 0.0
        self._next_line = 0.0
        self._batches = 0

    # -- ProgressBar's interface -----------------------------------------------------------
    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.refresh_rate > 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    # -- hooks -----------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            self.disable()
        if not self.is_enabled:
            return
        out = self.file or sys.stdout
        live = self.interactive if self.interactive is not None else bool(getattr(out, "isatty", lambda: False)())
        self._window = (time.perf_counter(), pl_module.images_seen)
        self._next_line = self._line_after(pl_module.kimg)
        if live:
            self.bar = tqdm(total=float(pl_module.total_kimg), initial=pl_module.kimg, file=out, dynamic_ncols=True,
                            bar_format="{percentage:3.0f}%|{bar}| {n:.1f}/{total:g} kimg [{elapsed}{postfix}]")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if not self.is_enabled:
            return
        self._batches += 1
        self._measure(pl_module.images_seen)
        if self.bar is not None:
            if self._batches % self.refresh_rate == 0:
                self.bar.n = min(pl_module.kimg, pl_module.total_kimg)
                self.bar.set_postfix_str(self.describe(trainer, pl_module), refresh=True)
        elif pl_module.kimg >= self._next_line:
            self._next_line = self._line_after(pl_module.kimg)
            self._write(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.is_enabled:
            return
        if self.bar is not None:
            self.bar.n = min(pl_module.kimg, pl_module.total_kimg)
            self.bar.set_postfix_str(self.describe(trainer, pl_module), refresh=True)
            self.bar.close()
            self.bar = None
        elif not self.lines or not self.lines[-1].startswith(f"kimg {_kimg(pl_module.kimg, pl_module.total_kimg)}/"):
            self._write(trainer, pl_module)

    # -- text ------------------------------------------------------------------------------
    def _line_after(self, kimg: float) -> float:
        """The next multiple of ``log_every_kimg`` after ``kimg``: where the next plain line goes."""
        return (kimg // self.log_every_kimg + 1) * self.log_every_kimg

    def _measure(self, images: int) -> None:
        """images/s over the last stretch of at least RATE_WINDOW_S (so it follows the stage's speed)."""
        now = time.perf_counter()
        start, start_images = self._window
        if now - start >= RATE_WINDOW_S and images > start_images:
            self._rate = (images - start_images) / (now - start)
            self._window = (now, images)

    def describe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        """``32 px a=0.42 | 120.3 img/s, 8.3 s/kimg | ETA 1:02:03 | loss/d 1.234 loss/g 0.567``."""
        parts = []
        if getattr(pl_module, "schedule", None) is not None:
            parts.append(f"{pl_module.resolution} px a={pl_module.alpha:.2f}")
        if self._rate > 0:
            left = max(pl_module.total_kimg * 1000 - pl_module.images_seen, 0) / self._rate
            parts.append(f"{self._rate:.1f} img/s, {1000 / self._rate:.1f} s/kimg")
            parts.append(f"ETA {format_duration(left)}")
        metrics = trainer.progress_bar_metrics
        losses = " ".join(f"{k} {float(metrics[k]):.3f}" for k in SHOWN_LOSSES if k in metrics)
        if losses:
            parts.append(losses)
        return " | ".join(parts)

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = pl_module.total_kimg
        line = (f"kimg {_kimg(pl_module.kimg, total)}/{total:g} ({100 * min(pl_module.kimg / total, 1.0):.0f}%) | "
                f"{self.describe(trainer, pl_module)}")
        self.lines.append(line)
        print(line, file=self.file or sys.stdout, flush=True)


def _kimg(kimg: float, total: float) -> str:
    """kimg with the decimals a run of ``total`` kimg needs: 12.3 of 100, 0.064 of 0.5."""
    return f"{kimg:.{1 if total >= 10 else 2 if total >= 1 else 3}f}"
