"""Loggers whose history survives a resume.

Lightning's ``CSVLogger`` deletes the ``metrics.csv`` it finds in its directory, so every
resume of a run (a requeued SLURM job, a restart in the same run directory) threw away the
history before it. :class:`CSVLogger` here appends instead. Rows that a killed run logged
after its last checkpoint are logged again after the resume (training repeats those steps):
the old copies are dropped at the first write, so every step appears once. TensorBoard
keeps its event files by itself (a resumed run adds one more file beside them), and W&B
resumes the same run id (``t2f.train``).
"""

from __future__ import annotations

import csv
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

__all__ = ["AppendingExperimentWriter", "CSVLogger", "use_kimg_axis", "wandb_credentials", "wandb_mode"]


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's writer, minus the deletion: an existing ``metrics.csv`` is continued."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self._resumed = self._fs.isfile(self.metrics_file_path)
        if self._resumed:
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])

    def _check_log_dir_exists(self) -> None:
        """Lightning deletes the previous metrics.csv here; we keep it."""

    def save(self) -> None:
        if self._resumed and self.metrics:
            self._resumed = False
            self._drop_rows_from(min(int(m["step"]) for m in self.metrics))
        super().save()

    def _drop_rows_from(self, step: int) -> None:
        """Remove rows at or after ``step``: logged by a run killed after its last checkpoint."""
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            fields = reader.fieldnames or self.metrics_keys
        kept = [r for r in rows if not _at_or_after(r.get("step"), step)]
        if len(kept) == len(rows):
            return
        with self._fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)


def _at_or_after(value: Any, step: int) -> bool:
    try:
        return int(float(value)) >= step
    except (TypeError, ValueError):
        return False


class CSVLogger(_LightningCSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that appends to the run's ``metrics.csv`` on resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_credentials(env: dict[str, str] | None = None) -> bool:
    """Whether W&B would find an API key without asking: ``WANDB_API_KEY``, or the netrc entry
    that ``wandb login`` writes for the W&B host (``WANDB_BASE_URL``, default api.wandb.ai)."""
    env = dict(os.environ) if env is None else env
    if env.get("WANDB_API_KEY"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = Path(env.get("NETRC") or Path(env.get("HOME") or Path.home()) / ".netrc")
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def wandb_mode(env: dict[str, str] | None = None) -> str:
    """``WANDB_MODE`` if the user set it; else online with credentials and offline without, so a
    run never stops at a login prompt and a logged-in user's runs reach the dashboard."""
    env = dict(os.environ) if env is None else env
    return env.get("WANDB_MODE") or ("online" if wandb_credentials(env) else "offline")


def use_kimg_axis(loggers: list[Any]) -> None:
    """Every W&B panel against kimg. Losses, metrics and grids are all logged with ``kimg`` and
    at step = images seen, so CSV rows and TensorBoard points of one moment share their step too."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.define_metric("kimg")
            logger.experiment.define_metric("*", step_metric="kimg", step_sync=True)
