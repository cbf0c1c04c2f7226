"""Small shared helpers: config errors, rank-0 printing, plain-text tables."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only


class ConfigError(ValueError):
    """A config value that cannot work; the message says which key and how to fix it."""


@rank_zero_only
def rank_zero_print(message: str) -> None:
    print(message, flush=True)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell under a dashed rule: readable in a terminal and in
    a SLURM log alike."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(f"{str(c):<{w}}" for c, w in zip(r, widths)).rstrip() for r in lines)


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
