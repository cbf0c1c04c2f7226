"""``t2f-train``: the training command, also behind ``python run.py`` and ``python -m t2f.train``.

Hydra parses the command line here, before Lightning is imported, so ``--help`` and
``--cfg job`` answer at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def train_main(cfg: DictConfig) -> float | None:
    """Train one run; returns ``optimized_metric``'s final value for sweepers (Optuna)."""
    from t2f.train import train

    with run_errors():
        metrics = train(cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


@contextmanager
def run_errors() -> Iterator[None]:
    """A config or file that cannot work (a ValueError or FileNotFoundError whose message names the
    key or file, also from a constructor Hydra instantiated) or a run that diverged ends the command
    with its one-line message and exit status 1, not a traceback (``HYDRA_FULL_ERROR=1`` shows the
    traceback). Inside a multirun the error is left to Hydra, which records the failed job (Optuna
    goes on)."""
    from t2f.callbacks.divergence import TrainingDiverged
    from t2f.checkpoints import user_errors

    if _in_multirun():
        yield
        return
    with user_errors((FileNotFoundError, ValueError, TrainingDiverged)):
        yield


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
