"""``t2f-train``: the training command, also behind ``python run.py`` and ``python -m t2f.train``.

Hydra parses the command line here, before Lightning is imported, so ``--help`` and
``--cfg job`` answer at once.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def train_main(cfg: DictConfig) -> float | None:
    """Train one run; returns ``optimized_metric``'s final value for sweepers (Optuna)."""
    from t2f.train import train

    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None
