"""What a checkpoint's config may build: an allow-list of classes, checked before anything runs.

A checkpoint stores its run config, and ``hydra.utils.instantiate`` calls whatever ``_target_``
that config names, so a crafted file that passes ``torch.load(weights_only=True)`` could still
name ``pathlib.Path.write_text``, ``builtins.open`` or ``torch.load``. A config read from a
checkpoint is therefore built only when every ``_target_`` in it (nested ones, ``_partial_``
ones, those inside lists) is

* one the shipped configs use (every ``_target_`` under ``t2f/conf``, scanned, so the list
  follows the configs),
* one of t2f's own LightningModules (``t2f.modules.<file>.<Class>``), datamodules
  (``t2f.data.<file>.<Class>``) or networks (``t2f.nets.<file>.<Class>``), or
* a ``torch.optim`` optimizer,

and no string in it is an OmegaConf interpolation: instantiate resolves them, so
``${oc.env:VAR}`` would read the environment and ``${oc.decode:...}`` would make new values
(even new ``_target_`` mappings) after the check; t2f stores a checkpoint's config resolved.
Anything else is refused with one line naming the key, the target and the file.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import yaml

from t2f.conf import CONFIG_DIR

__all__ = ["UntrustedConfigError", "allowed_target", "check_trusted", "instantiate_trusted", "shipped_targets"]

# one file below t2f.modules / t2f.data / t2f.nets, then a class name: nothing else is imported to check
_PROJECT_CLASS = re.compile(r"^t2f\.(modules|data|nets)\.[a-z][a-z0-9_]*\.[A-Z][A-Za-z0-9_]*$")


class UntrustedConfigError(ValueError):
    """A checkpoint's config names something a checkpoint may not build."""


@cache
def shipped_targets() -> frozenset[str]:
    """Every ``_target_`` written in the shipped configs (``t2f/conf/**/*.yaml``)."""
    targets: set[str] = set()
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            targets.update(t for _, t in _targets(document, "") if isinstance(t, str) and "${" not in t)
    return frozenset(targets)


@cache
def _optimizers() -> frozenset[str]:
    """``torch.optim.Adam`` and ``torch.optim.adam.Adam`` for every optimizer torch ships."""
    import torch

    names = set()
    for name, value in vars(torch.optim).items():
        if isinstance(value, type) and issubclass(value, torch.optim.Optimizer):
            names.update({f"torch.optim.{name}", f"{value.__module__}.{value.__qualname__}"})
    return frozenset(names)


def _project_class(target: str) -> bool:
    """A LightningModule or LightningDataModule defined in t2f.modules.* / t2f.data.*, or a network
    (``nn.Module``) defined in t2f.nets.*."""
    if not _PROJECT_CLASS.match(target):
        return False
    module_name, _, name = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    cls = vars(module).get(name)
    if not isinstance(cls, type) or cls.__module__ != module_name:  # defined there, not imported
        return False
    import pytorch_lightning as pl
    from torch import nn

    if module_name.startswith("t2f.nets."):
        return issubclass(cls, nn.Module)
    return issubclass(cls, (pl.LightningModule, pl.LightningDataModule))


def allowed_target(target: Any) -> bool:
    """Whether a checkpoint's config may name ``target`` as a ``_target_``."""
    if not isinstance(target, str):
        return False
    return target in shipped_targets() or target in _optimizers() or _project_class(target)


def _targets(tree: Any, where: str) -> Iterator[tuple[str, Any]]:
    """``(key path, _target_)`` for every mapping in ``tree`` that has one, lists included."""
    if isinstance(tree, dict):
        if "_target_" in tree:
            yield where or "<root>", tree["_target_"]
        for key, value in tree.items():
            yield from _targets(value, f"{where}.{key}" if where else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _targets(value, f"{where}[{i}]")


def _interpolations(tree: Any, where: str) -> Iterator[tuple[str, str]]:
    """``(key path, string)`` for every key or value in ``tree`` that holds ``${``."""
    if isinstance(tree, str):
        if "${" in tree:
            yield where, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            path = f"{where}.{key}" if where else str(key)
            yield from _interpolations(key, path)
            yield from _interpolations(value, path)
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _interpolations(value, f"{where}[{i}]")


def check_trusted(config: Any, where: str, source: str) -> None:
    """Refuse ``config`` (the subtree at key ``where`` of the file ``source``) unless every
    ``_target_`` in it is allowed and none of its strings is an interpolation."""
    for path, target in _targets(config, where):
        if not allowed_target(target):
            raise UntrustedConfigError(
                f"{source}: refusing to build {path}._target_={target!r} from this checkpoint (nothing was run): "
                "a checkpoint may only name t2f's modules and datamodules, torch.optim optimizers "
                "and the classes the configs in t2f/conf use")
    for path, text in _interpolations(config, where):
        raise UntrustedConfigError(
            f"{source}: refusing to build {where} from this checkpoint (nothing was run): {path} holds the "
            f"interpolation {text!r}, but t2f stores a checkpoint's config resolved")


def instantiate_trusted(config: dict[str, Any], where: str, source: str) -> Any:
    """``hydra.utils.instantiate(config)`` after :func:`check_trusted` has passed it."""
    from hydra.utils import instantiate

    check_trusted(config, where, source)
    return instantiate(config)
