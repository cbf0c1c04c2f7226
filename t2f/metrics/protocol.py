"""The evaluation protocol, and real-image statistics cached on disk under its key.

Every reported number belongs to a ``Protocol``: which real images (dataset, split,
preprocessing), at which resolution, through which feature extractor, how many real and fake
images, plus any metric options. ``Protocol.key()`` hashes all of it, so a changed option
never reuses stale statistics; the file also stores the full protocol, checked on load.

``cached_real_statistics`` is metric-agnostic: ``compute_fn`` returns a dict of tensors (e.g.
``InceptionMetrics.real_statistics()`` or ``SlicedWassersteinDistance.real_statistics()``),
which is saved atomically (temporary file + ``os.replace``) and loaded next time. Under DDP it
is a collective call: every rank takes the same branch, and rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from t2f.metrics.common import dist_rank_world

__all__ = ["PROTOCOL_VERSION", "Protocol", "cached_real_statistics", "statistics_path"]

# Bump when the code that computes cached statistics changes what it computes.
PROTOCOL_VERSION = 2  # 2: Inception features kept in sample order (torch-fidelity's KID/IS), real alignment evidence


def _plain(value: Any) -> Any:
    """JSON-ready, order-stable form of an option value (mappings sorted, tuples as lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:  # OmegaConf containers and other config objects
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return _plain(OmegaConf.to_container(value, resolve=True))
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"protocol option of type {type(value).__name__} is not JSON-serialisable: {value!r}")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Everything that determines a metric value. ``key()`` is a stable short hash of all fields.

    Attributes:
        dataset: dataset name (e.g. ``"celeba"``), plus a version/fingerprint if it can change.
        resolution: image size the metric sees (real images are resized to it).
        feature_extractor: e.g. ``InceptionMetrics.feature_extractor_id`` or
            ``SlicedWassersteinDistance.feature_extractor_id``.
        num_real / num_fake: number of real and generated images.
        split: dataset split of the real images.
        crop: crop applied before resizing (``"none"``, ``"center"``, ``"celeba-178"`` ...).
        resize: resize filter to ``resolution`` (``"none"``, ``"bilinear-antialias"`` ...).
        options: anything else that changes the numbers (KID subset size, SWD patches, seed ...).
        version: ``PROTOCOL_VERSION`` of the statistics code.
    """

    dataset: str
    resolution: int
    feature_extractor: str
    num_real: int
    num_fake: int
    split: str = "train"
    crop: str = "none"
    resize: str = "none"
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        for name in ("resolution", "num_real", "num_fake", "version"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or int(value) < 0:
                raise ValueError(f"Protocol.{name} must be a non-negative int, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("dataset", "feature_extractor", "split", "crop", "resize"):
            object.__setattr__(self, name, str(getattr(self, name)))
        object.__setattr__(self, "options", _plain(dict(self.options)))

    def __hash__(self) -> int:
        return hash(self.key())

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def key(self, length: int = 16) -> str:
        """Hex SHA-256 prefix of the canonical JSON of all fields."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:length]

    def replace(self, **changes: Any) -> Protocol:
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One line stating the protocol, to log next to the numbers it produced."""
        opts = ", ".join(f"{k}={v}" for k, v in self.to_dict()["options"].items())
        return (
            f"{self.dataset}/{self.split} at {self.resolution}px (crop={self.crop}, resize={self.resize}), "
            f"{self.feature_extractor}, {self.num_real} real vs {self.num_fake} fake"
            + (f", {opts}" if opts else "") + f" [protocol v{self.version} key {self.key()}]"
        )


def statistics_path(protocol: Protocol, cache_dir: str | os.PathLike, name: str = "real") -> Path:
    """``cache_dir/<name>-<key>.pt``."""
    return Path(cache_dir).expanduser() / f"{name}-{protocol.key()}.pt"


def _try_load(path: Path, protocol: Protocol) -> dict[str, Tensor] | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: recompute, don't crash
        warnings.warn(f"ignoring unreadable statistics cache {path}: {type(err).__name__}: {err}", stacklevel=3)
        return None
    if not isinstance(blob, dict) or blob.get("protocol") != protocol.to_json():
        warnings.warn(f"ignoring statistics cache {path}: it was written for another protocol", stacklevel=3)
        return None
    stats = blob.get("statistics")
    if not isinstance(stats, dict) or not all(isinstance(v, Tensor) for v in stats.values()):
        return None
    return stats


def _all_ranks(flag: bool) -> bool:
    """True when ``flag`` holds on every rank (a collective under torch.distributed)."""
    _, world = dist_rank_world()
    if world == 1:
        return flag
    flags: list[Any] = [None] * world
    torch.distributed.all_gather_object(flags, flag)
    return all(flags)


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def cached_real_statistics(
    protocol: Protocol,
    cache_dir: str | os.PathLike,
    compute_fn: Callable[[], Mapping[str, Tensor]],
    name: str = "real",
) -> dict[str, Tensor]:
    """Statistics from ``cache_dir/<name>-<key>.pt``, or ``compute_fn()`` saved there atomically.

    ``compute_fn`` returns a dict of tensors (moved to the CPU before saving). An unreadable
    file, or one written for another protocol, is recomputed and replaced. Under DDP call it on
    every rank: the cache is used only if every rank can read it (else every rank runs
    ``compute_fn``, which may hold collectives), and only rank 0 writes.
    """
    path = statistics_path(protocol, cache_dir, name)
    stats = _try_load(path, protocol)
    if _all_ranks(stats is not None):
        return stats  # type: ignore[return-value]
    stats = {k: v.detach().cpu() for k, v in dict(compute_fn()).items()}
    if not all(isinstance(v, Tensor) for v in stats.values()):
        raise TypeError("compute_fn must return a dict of tensors")
    rank, _ = dist_rank_world()
    if rank == 0:
        _atomic_save({"protocol": protocol.to_json(), "name": name, "statistics": stats}, path)
    return stats
