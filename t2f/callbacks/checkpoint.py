"""Checkpoints on a kimg schedule: ``last.ckpt`` (every N kimg, at the end, on interruption),
a short history of ``snapshot-kimgNNNNNN.NNN.ckpt`` files (the newest ``keep`` of the periodic
saves, so a run can go back to before a collapse, or past a damaged ``last.ckpt``) and, with
``monitor``, ``best.ckpt`` whenever the monitored metric improves.

Lightning's ModelCheckpoint counts optimizer steps or epochs; GAN runs are measured in
images seen, and an interrupted run must leave a resumable ``last.ckpt`` behind. This builds
on public API only (``trainer.save_checkpoint``, ``trainer.callback_metrics``, hooks and the
callback's state dict), so Lightning may change ModelCheckpoint's internals freely. It derives
from Lightning's public ``Checkpoint`` base, which makes Lightning run it after the other
callbacks (their state at this step goes into the file), list it in
``trainer.checkpoint_callbacks`` and not add a default ModelCheckpoint of its own.

Files are written atomically by :class:`t2f.checkpoint_io.AtomicCheckpointIO` (``t2f.train``
installs it): a crash during a save never leaves a truncated checkpoint in place of a good one,
and temporary files a killed save left behind are removed when training starts. A snapshot is
a copy of the ``last.ckpt`` just written (a file of its own, no second serialisation). A state
whose weights are not finite is never saved: the previous files stay as they are (see
:mod:`t2f.callbacks.divergence`).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from t2f.callbacks.divergence import TrainingDiverged, nonfinite_tensors
from t2f.callbacks.intervals import KimgInterval
from t2f.checkpoint_io import atomic_file, remove_stale_temporaries

LAST = "last.ckpt"
BEST = "best.ckpt"
SNAPSHOT = re.compile(r"^snapshot-kimg(\d+\.\d+)\.ckpt$")


def snapshot_name(images_seen: int) -> str:
    """``snapshot-kimg000012.345.ckpt``: fixed width, so names sort by kimg."""
    return f"snapshot-kimg{images_seen / 1000:010.3f}.ckpt"


def snapshots(dirpath: str | os.PathLike) -> list[str]:
    """The snapshot files in ``dirpath``, newest first (latest written, then highest kimg)."""
    dirpath = os.fspath(dirpath)
    if "://" in dirpath or not os.path.isdir(dirpath):
        return []
    found = []
    for name in os.listdir(dirpath):
        match = SNAPSHOT.match(name)
        path = os.path.join(dirpath, name)
        if match and os.path.isfile(path):
            found.append((os.stat(path).st_mtime_ns, float(match[1]), path))
    return [path for *_, path in sorted(found, reverse=True)]


def copy_atomically(source: str, target: str) -> None:
    """``target`` becomes a copy of ``source`` (its own file, fsynced), renamed into place, so a
    damaged ``last.ckpt`` never takes its snapshots with it."""
    with open(source, "rb") as src, atomic_file(target) as dst:
        shutil.copyfileobj(src, dst, 16 << 20)


class KimgCheckpoint(Checkpoint):
    """Args: ``dirpath``; ``every_kimg`` between saves of ``last.ckpt``; ``monitor`` (a logged
    value such as ``metrics/swd``) and ``mode`` (``min``/``max``) for ``best.ckpt``; ``keep``:
    how many snapshots of the periodic saves to keep (0: ``last.ckpt`` only)."""

    def __init__(self, dirpath: str, every_kimg: float = 10.0, monitor: str | None = None,
                 mode: str = "min", keep: int = 3) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode={mode!r}: use 'min' (swd, fid, kid) or 'max' (is, alignment)")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise ValueError(f"callbacks.checkpoint.keep={keep!r} must be a whole number >= 0 "
                             "(snapshots to keep; 0: last.ckpt only)")
        self.keep = keep
        dirpath = os.fspath(dirpath)
        self.dirpath = dirpath if "://" in dirpath else os.path.realpath(os.path.expanduser(dirpath))
        self.monitor = monitor
        self.mode = mode
        self.interval = KimgInterval(every_kimg)
        self.best_model_score: float | None = None
        self.best_model_path: str | None = None
        self.last_model_path: str | None = None
        self._saved_step = 0  # global step of the latest last.ckpt (0: none to skip yet)

    @property
    def state_key(self) -> str:
        # one state per monitored metric, so several of these can share a Trainer
        return f"{type(self).__qualname__}{{'monitor': {self.monitor!r}, 'mode': {self.mode!r}}}"

    # -- hooks -----------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero:  # only rank 0 writes files
            for path in remove_stale_temporaries(self.dirpath):
                rank_zero_info(f"Removed {path}: the temporary file of an interrupted save")
            if self.keep and "://" in self.dirpath:
                rank_zero_warn(f"callbacks.checkpoint.keep={self.keep}: snapshots are kept on local filesystems "
                               f"only, not in {self.dirpath}")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.interval.reset(pl_module.images_seen)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           *args: Any) -> None:
        if self.interval.crossed(pl_module.images_seen):
            self.save_now(trainer, snapshot=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        never_seen = self.best_model_score is None and self.monitor not in trainer.callback_metrics
        if self.monitor is not None and never_seen:
            rank_zero_warn(f"KimgCheckpoint(monitor={self.monitor!r}) never saw that value, so there is "
                           f"no {BEST}; logged: {sorted(trainer.callback_metrics)}")
        if self._saved_step != trainer.global_step:
            self.save_now(trainer, snapshot=True)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        """An interrupted run (Ctrl-C, SIGTERM, a crash) leaves a resumable last.ckpt.

        Under DDP a save is collective (every rank's RNG state goes in). A plain SystemExit
        stops one rank only (submitit exits rank 0 after requeuing a SLURM job), so that rank
        must not wait for the others: the requeued job resumes from the last periodic save.
        A diverged run saves nothing: last.ckpt keeps the last finite state.
        """
        if trainer.world_size > 1 and type(exception) is SystemExit:
            return
        if isinstance(exception, TrainingDiverged):
            return
        if trainer.global_step > 0 and self._saved_step != trainer.global_step:
            try:
                self._save(trainer, LAST)
            except TrainingDiverged as error:  # found while saving: keep the old file, report the first error
                rank_zero_warn(f"Not saved on interruption: {error}")

    # -- saving ----------------------------------------------------------------------------

    def save_now(self, trainer: pl.Trainer, snapshot: bool = False) -> None:
        """``best.ckpt`` if the monitored value improved, then ``last.ckpt`` (and, for the
        periodic saves, a snapshot of it).

        Collective under DDP (``trainer.save_checkpoint`` gathers every rank's state): call it
        on every rank. MetricsCallback calls it right after measuring a monitored metric, so
        ``best.ckpt`` holds exactly the weights that were measured.
        """
        current = self._current_score(trainer)
        if current is not None and self._improves(trainer, current):
            self.best_model_score = current  # before saving: the file records its own score
            self.best_model_path = os.path.join(self.dirpath, BEST)
            self._save(trainer, BEST)
        self._save(trainer, LAST)
        if snapshot and self.keep > 0:
            self._snapshot(trainer)

    def _save(self, trainer: pl.Trainer, name: str) -> None:
        path = os.path.join(self.dirpath, name)
        self._refuse_nonfinite(trainer, name)
        if name == LAST:
            self.last_model_path = path
        trainer.save_checkpoint(path, weights_only=False)  # the whole state, to resume (and no INFO line each save)
        self._saved_step = trainer.global_step

    def _refuse_nonfinite(self, trainer: pl.Trainer, name: str) -> None:
        """Never write NaN/Inf weights over a good file (all ranks hold the same weights)."""
        module = getattr(trainer, "lightning_module", None)
        bad = nonfinite_tensors(module) if module is not None else []
        if bad:
            more = f" and {len(bad) - 1} more tensors hold" if len(bad) > 1 else " holds"
            raise TrainingDiverged(
                f"training diverged by {getattr(module, 'kimg', 0.0):.3f} kimg: {bad[0]}{more} NaN or Inf, "
                f"so {os.path.join(self.dirpath, name)} was not written and keeps the last finite weights: lower "
                "the learning rate (model.optimizer_g.lr, model.optimizer_d.lr) and start again, or go back to a "
                "snapshot with ckpt_path=...")

    def _snapshot(self, trainer: pl.Trainer) -> None:
        """Copy the last.ckpt just written as this kimg's snapshot; keep the newest ``keep``."""
        if "://" in self.dirpath or not trainer.is_global_zero:  # rank 0 alone writes files
            return
        name = snapshot_name(trainer.lightning_module.images_seen)
        copy_atomically(os.path.join(self.dirpath, LAST), os.path.join(self.dirpath, name))
        for old in snapshots(self.dirpath)[self.keep:]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(old)

    def _current_score(self, trainer: pl.Trainer) -> float | None:
        if self.monitor is None or self.monitor not in trainer.callback_metrics:
            return None
        value = float(trainer.callback_metrics[self.monitor])
        if math.isnan(value):  # a diverged run: worst possible, never "better"
            value = math.inf if self.mode == "min" else -math.inf
        return value

    def _improves(self, trainer: pl.Trainer, current: float) -> bool:
        best = self.best_model_score
        better = best is None or (current < best if self.mode == "min" else current > best)
        # every rank must take the same branch: a save is collective
        return bool(trainer.strategy.reduce_boolean_decision(better, all=True))

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, "dirpath": self.dirpath,
                "best_model_score": self.best_model_score, "best_model_path": self.best_model_path,
                "last_model_path": self.last_model_path}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The best score carries over only within the same checkpoint directory: a run resumed
        into a new directory has no best.ckpt there yet, so it starts its own."""
        score = state_dict.get("best_model_score")
        if state_dict.get("monitor") != self.monitor or score is None:
            return
        if state_dict.get("dirpath", self.dirpath) != self.dirpath:
            rank_zero_info(f"Checkpoints moved from {state_dict.get('dirpath')} to {self.dirpath}: "
                           f"{BEST} there starts afresh (previous best {self.monitor}={float(score):.5g})")
            return
        self.best_model_score = float(score)  # a tensor in checkpoints of the ModelCheckpoint era
        self.best_model_path = state_dict.get("best_model_path")

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Checkpoints written while this class was a ModelCheckpoint keep its state under a
        longer key; read it, so that resuming such a run keeps its best score."""
        states = checkpoint.get("callbacks") or {}
        legacy = self.state_key[:-1] + ", 'every_n_train_steps': 0, 'every_n_epochs': 1, 'train_time_interval': None}"
        if self.state_key not in states and legacy in states:
            self.load_state_dict(states[legacy])
