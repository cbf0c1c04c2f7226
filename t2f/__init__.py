"""t2f: face GANs (T2F, StyleGAN, DCGAN) with PyTorch Lightning and Hydra.

``t2f.__version__`` is the installed version; ``t2f.load_generator(path)`` loads the EMA
generator of a training checkpoint or of a file written by ``t2f.export``; ``t2f.train(*overrides)``
trains with the command line's overrides (``t2f.train("model=dcgan")``). Both are imported on
first use, so ``import t2f`` stays light.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("t2f")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "load_generator", "train"]


def __getattr__(name: str) -> Any:
    if name == "load_generator":
        from t2f.export import load_generator

        return load_generator
    if name == "train":  # the module t2f.train is callable (its run function)
        import importlib

        return importlib.import_module("t2f.train")
    raise AttributeError(f"module 't2f' has no attribute {name!r}")
