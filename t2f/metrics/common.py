"""Helpers shared by the metrics: image conversion, rank queries, float32 islands."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor


def to_uint8(images: Tensor) -> Tensor:
    """Images in [-1, 1] (any float dtype) -> uint8 in [0, 255]; uint8 input passes through.

    The one conversion every metric uses, the StyleGAN2-ADA convention
    ``(x * 127.5 + 128).clamp(0, 255).to(uint8)``, i.e. ``round((x + 1) * 127.5)`` with halves
    rounded up. Values outside [-1, 1] are clipped, as a saved PNG would clip them.
    """
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise TypeError(f"expected float images in [-1, 1] or uint8 images, got dtype {images.dtype}")
    return (images.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def as_rgb(images: Tensor) -> Tensor:
    """(N, 1, H, W) -> (N, 3, H, W) by repetition; 3-channel images pass through."""
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {images.shape[1]}")
    return images


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) outside torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@contextlib.contextmanager
def full_precision(device: torch.device | str) -> Iterator[None]:
    """Disable autocast: a metric must not change with the trainer's mixed-precision setting."""
    device_type = torch.device(device).type
    with torch.autocast(device_type=device_type, enabled=False):
        yield
