"""t2f: face GANs (T2F, StyleGAN, DCGAN) with PyTorch Lightning and Hydra.

``t2f.__version__`` is the installed version; ``t2f.load_generator(path)`` loads the EMA
generator of a training checkpoint or of a file written by ``t2f.export`` (imported on first
use, so ``import t2f`` stays light).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("t2f")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "load_generator"]


def __getattr__(name: str) -> Any:
    if name == "load_generator":
        from t2f.generate import open_generator

        return open_generator
    raise AttributeError(f"module 't2f' has no attribute {name!r}")
