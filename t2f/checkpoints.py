"""Reading training checkpoints back: the run config, the module and the caption vocabulary.

A t2f checkpoint is a Lightning checkpoint that also holds the resolved run config
(``ckpt["t2f"]["config"]``) and the datamodule's vocabulary, so the model can be rebuilt
without the command line that trained it. Generation needs only the module (and the
vocabulary); evaluation also rebuilds the dataset. A checkpoint is data from a file: it is
read with ``weights_only=True`` and its config builds only allowed classes (:mod:`t2f.trusted`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from t2f.data.vocab import Vocabulary
from t2f.trusted import check_trusted, instantiate_trusted
from t2f.utils import unwrap_instantiation

__all__ = ["build_module", "resolve_device", "checkpoint_config", "checkpoint_vocab", "load_checkpoint", "read_checkpoint",
           "user_errors"]


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; anything else as torch names it, checked
    here so that a missing GPU is one line, not a driver traceback from the first tensor moved."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count() > 0:
        raise ValueError(f"device={name}: there are only {torch.cuda.device_count()} GPU(s) (cuda:0 ...)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} but no GPU is available (torch.cuda.is_available() is False): "
                         "use device=cpu, or device=auto to take the GPU where there is one")
    return device


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's contents (tensors on CPU), or an error that says what is wrong with it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ckpt={path} does not exist: pass a checkpoint such as <run>/checkpoints/last.ckpt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and weights-only errors all mean "not ours"
        reason = (str(error).splitlines() or [""])[0]
        raise ValueError(f"ckpt={path} is not a checkpoint written by t2f ({type(error).__name__}: {reason})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"ckpt={path} holds a {type(ckpt).__name__}, not a t2f checkpoint")
    return ckpt


# The per-model modules that GANModule replaced: their checkpoints' configs describe other parts.
_RETIRED_MODULES = ("t2f.modules.t2f.T2FModule", "t2f.modules.stylegan.StyleGANModule",
                    "t2f.modules.dcgan.DCGANModule")


def checkpoint_config(ckpt: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """The resolved run config stored by training."""
    config = (ckpt.get("t2f") or {}).get("config")
    if not isinstance(config, dict) or "model" not in config or "dataset" not in config:
        raise ValueError(f"{path} holds no run config (ckpt['t2f']['config']): was it written by t2f training?")
    target = config["model"].get("_target_") if isinstance(config["model"], dict) else None
    if target in _RETIRED_MODULES:
        raise ValueError(f"{path} was written by an older t2f (model._target_={target}, before every model became "
                         "a configuration of t2f.modules.gan.GANModule) and cannot be resumed or loaded by this "
                         "one: export its generator with the t2f that wrote it (python -m t2f.export), which this "
                         "t2f samples from, or train anew")
    return config


def datamodule_state(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The datamodule's saved state (its vocabulary): Lightning stores it under the class name."""
    target = str(((ckpt.get("t2f") or {}).get("config") or {}).get("dataset", {}).get("_target_", ""))
    state = ckpt.get(target.rsplit(".", 1)[-1])
    if isinstance(state, dict):
        return state
    return next((v for v in ckpt.values() if isinstance(v, dict) and isinstance(v.get("vocab"), dict)), None)


def checkpoint_vocab(ckpt: dict[str, Any]) -> Vocabulary | None:
    """The caption vocabulary the model was trained with."""
    state = datamodule_state(ckpt) or {}
    return Vocabulary.from_state_dict(state["vocab"]) if isinstance(state.get("vocab"), dict) else None


def build_module(ckpt: dict[str, Any], path: str | os.PathLike, device: torch.device | str = "cpu") -> Any:
    """The LightningModule described by the checkpoint's config, with its weights and images seen.

    Only allowed classes are built (:func:`t2f.trusted.check_trusted`): anything else is refused
    before any of it runs."""
    config = checkpoint_config(ckpt, path)
    if "state_dict" not in ckpt:
        raise ValueError(f"{path} holds no weights (state_dict)")
    module = instantiate_trusted(dict(config["model"]), "model", str(path))
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path}: the weights do not fit the model its config describes "
                         f"({config['model'].get('_target_')}): {str(error).splitlines()[0]}") from None
    module.on_load_checkpoint(ckpt)
    module.run_config = config
    return module.to(device).eval()


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[Any, Any, dict]:
    """``(module, datamodule, checkpoint)`` rebuilt from a training checkpoint (allowed classes only)."""
    ckpt = read_checkpoint(path)
    config = checkpoint_config(ckpt, path)
    check_trusted(config["model"], "model", str(path))  # refused before the dataset is built
    datamodule = instantiate_trusted(config["dataset"], "dataset", str(path))
    state = datamodule_state(ckpt)
    if state is not None:
        datamodule.load_state_dict(state)  # the vocabulary the model was trained with
    datamodule.setup("fit")
    module = build_module(ckpt, path, device)
    return module, datamodule, ckpt


@contextmanager
def user_errors(kinds: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError)) -> Iterator[None]:
    """For CLIs: a bad argument or file (an error of ``kinds``, also from inside a constructor that
    Hydra instantiated) ends the command with its one-line message (exit status 1) instead of a
    traceback; ``HYDRA_FULL_ERROR=1`` shows the traceback."""
    try:
        yield
    except Exception as error:
        shown = unwrap_instantiation(error)
        if not isinstance(shown, kinds) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise SystemExit(f"error: {shown}") from None
