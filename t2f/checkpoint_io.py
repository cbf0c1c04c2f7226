"""Checkpoint files that are either the old one or the new one, never a truncated mix.

Lightning's ``TorchCheckpointIO`` writes through fsspec, which stages the file in ``$TMPDIR``
and then moves it over the target: when ``$TMPDIR`` is on another filesystem (a node's local
disk, the run on shared storage) the move is a copy, and a job killed during that copy (a
SLURM time limit, preemption, OOM) leaves a truncated ``last.ckpt`` that cannot be resumed.
Here the temporary file is written, flushed and fsynced next to the target, then renamed over
it with ``os.replace`` (atomic within one filesystem), and the directory entry is fsynced.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

# ".last.ckpt.tmp-<pid>-<hex>": hidden, and never mistaken for a checkpoint by a *.ckpt glob
_TEMPORARY = re.compile(r"^\..+\.tmp-\d+-[0-9a-f]+$")


def temporary_path(path: str) -> str:
    """A unique temporary name for ``path`` in its own directory (same filesystem)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """An open binary file that becomes ``path`` when the block ends without error: written
    beside it, flushed and fsynced, renamed over it, the directory entry fsynced. On any
    failure (including KeyboardInterrupt) the temporary file is removed and ``path`` untouched."""
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "xb") as f:  # "x": never reuse another writer's file
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_directory(directory)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that replaces ``path`` atomically and durably (``atomic_file``)."""
    with atomic_file(path) as f:
        torch.save(obj, f)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable; best effort where directories cannot be fsynced."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(directory: str | os.PathLike, of: Sequence[str] | None = None) -> list[str]:
    """Delete temporary files a killed writer left in ``directory``; returns their paths.

    ``of``: only the temporaries of these file names (other writers may share the directory).
    Call it only when no save is running (at the start of training, on the rank that saves;
    under the lock of the files ``of`` names).
    """
    directory = os.fspath(directory)
    if "://" in directory or not os.path.isdir(directory):
        return []
    prefixes = None if of is None else tuple(f".{name}.tmp-" for name in of)
    removed = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if prefixes is not None and not name.startswith(prefixes):
            continue
        if _TEMPORARY.match(name) and os.path.isfile(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves go through :func:`atomic_torch_save`.

    Remote paths (``s3://`` ...) keep Lightning's fsspec save: object stores replace whole
    objects anyway. Loading and removal are Lightning's.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        target = os.fspath(path)
        if "://" in target:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r})")
        atomic_torch_save(checkpoint, target)
