"""Small shared helpers: config errors, rank-0 printing, plain-text tables, user files.

Light on imports (Lightning and OmegaConf only inside the functions that need them), so that
:mod:`t2f.export`'s loader can use it without either.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch

if TYPE_CHECKING:
    from omegaconf import DictConfig


T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that cannot work; the message says which key and how to fix it."""


def is_rank_zero() -> bool:
    """Whether this process has global rank 0 (Lightning's record of it; 0 outside DDP)."""
    from pytorch_lightning.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def check_seed(seed: object) -> int:
    """``seed`` as a whole number; anything else is an error naming the key."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed={seed} must be a whole number, e.g. seed=0")
    return seed


def unwrap_instantiation(error: BaseException) -> BaseException:
    """The constructor's own error inside Hydra's ``InstantiationException`` (its message names
    the config key, e.g. ``model.total_kimg=-1 must be positive``); other errors as they are."""
    from hydra.errors import InstantiationException

    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def read_utf8(path: str | os.PathLike) -> str:
    """A user's text file (annotations, captions); one that is not UTF-8 is an error naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.object[error.start]:#x} at offset {error.start}): "
                         "save it as UTF-8") from None


def check_writable_dir(directory: str | os.PathLike, fix: str) -> Path:
    """Create ``directory`` and write a file in it now, before long work whose result goes there
    (rendering, decoding): a read-only folder is an error that says ``fix``, not a late traceback."""
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise ConfigError(f"cannot write to {directory} ({error.strerror or error}): {fix}") from None
    return directory


def check_output_file(path: str | os.PathLike, example: str, key: str = "out") -> Path:
    """``path`` as a file that can be written, checked before the work that produces it."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{key}={path} is a directory: give a file name in it, e.g. {key}={path / example}")
    check_writable_dir(path.parent, f"choose a writable file with {key}=PATH")
    return path


def rank_zero_print(message: str) -> None:
    """Print on the process of global rank 0 only."""
    if is_rank_zero():
        print(message, flush=True)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell under a dashed rule: readable in a terminal and in
    a SLURM log alike."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(f"{str(c):<{w}}" for c, w in zip(r, widths)).rstrip() for r in lines)


def print_config(cfg: DictConfig) -> None:
    """The resolved config as a rich tree (on rank 0), so a user sees exactly what runs."""
    from omegaconf import DictConfig, OmegaConf
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    if not is_rank_zero():
        return
    tree = Tree("config")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key)).add(Syntax(text, "yaml"))
    Console().print(tree)


def format_duration(seconds: float) -> str:
    """``1:02:03`` (hours:minutes:seconds), ``2:03`` under an hour, ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
    """A bar for long side work (real statistics, the alignment classifier, evaluation), so the
    training bar does not seem to freeze: on rank 0 and on a terminal only, removed when done."""
    from tqdm.auto import tqdm

    if not is_rank_zero():
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=None, dynamic_ncols=True)


def select_inputs(inputs: dict[str, object], index: torch.Tensor | slice) -> dict[str, object]:
    """The samples ``index`` of sampling inputs: every per-sample tensor and noise map; other
    values (a single psi) as they are."""
    def take(value: object) -> object:
        if isinstance(value, list):
            return [take(v) for v in value]
        if torch.is_tensor(value) and value.dim() > 0:
            return value[index.to(value.device) if torch.is_tensor(index) else index]
        return value

    return {key: take(value) for key, value in inputs.items()}
