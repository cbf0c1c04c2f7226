"""Per-rank random streams that survive a resume.

Weights must start identical on every rank (seeded before the module is built), but
latent noise must differ per rank, or DDP would train on N copies of one batch of fakes.
The states of every rank are saved with each checkpoint and put back on resume. The order
of the training images needs no state: it is a function of the seed and the images seen
(``t2f.data.base.ImageStream``). Work that only observes training (sample grids, metrics)
runs under :func:`rng_untouched`, so a resumed run draws exactly what an uninterrupted one does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist


def _numpy_state_to_plain(state: tuple) -> tuple:
    """Plain Python values, so checkpoints load with ``torch.load(weights_only=True)``."""
    kind, keys, pos, has_gauss, cached = state
    return (kind, keys.tolist(), int(pos), int(has_gauss), float(cached))


def capture_rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def rng_untouched() -> Iterator[None]:
    """Draws inside leave the global generators as they were: observing a run (a sample grid,
    a metric) never changes what training draws next, wherever a run was resumed."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def seed_rank(seed: int, rank: int) -> None:
    rank_seed = (seed * 1_000_003 + rank) % 2**32
    torch.manual_seed(rank_seed)
    np.random.seed(rank_seed)
    random.seed(rank_seed)


class RankSeed(pl.Callback):
    """Seeds torch/numpy/random with (seed, rank) at fit start, or restores saved states, and
    gives the datamodule the seed that orders its training images."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._restored: list[dict[str, Any]] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rank = trainer.global_rank
        if self._restored is not None and rank < len(self._restored):
            restore_rng_state(self._restored[rank])
        else:
            seed_rank(self.seed, rank)
        self._restored = None
        if hasattr(trainer.datamodule, "set_order_seed"):
            trainer.datamodule.set_order_seed(self.seed)

    def state_dict(self) -> dict[str, Any]:
        state = capture_rng_state()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)
        else:
            states = [state]
        return {"seed": self.seed, "rank_states": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict.get("rank_states")
