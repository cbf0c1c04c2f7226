"""Small shared helpers: config errors and rank-0 printing."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only


class ConfigError(ValueError):
    """A config value that cannot work; the message says which key and how to fix it."""


@rank_zero_only
def rank_zero_print(message: str) -> None:
    print(message, flush=True)


@rank_zero_only
def print_config(cfg: DictConfig) -> None:
    """The resolved config as a rich tree, so a user sees exactly what runs."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key)).add(Syntax(text, "yaml"))
    Console().print(tree)
