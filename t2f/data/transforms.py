"""Image geometry shared by the real-image datasets: finding files, centred crops, decoding.

A crop is a square in source pixels: ``size`` (``None``: the largest square that fits) and
``center`` ``(x, y)`` (``None``: the image centre). The square is shrunk to fit inside the
image and shifted inside it where it would cross the border, so every image of a folder
with mixed sizes gets a valid crop. The crop is then resized to the run's resolution with
an antialiasing (Lanczos) filter, in one PIL call.

Crops used in the literature for CelebA's 178x218 aligned images:

- ``size=178`` (default): the whole width, centred (rows 20..198);
- ``size=128, center=[89, 121]``: Progressive GAN / BEGAN-style tight face crop;
- ``size=108``: the DCGAN-tensorflow crop, centred.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# Errors PIL raises for unreadable, truncated or hostile image files.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
)


@dataclass(frozen=True)
class Crop:
    """A square crop in source pixels; see the module docstring."""

    size: int | None = None
    center: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.size is not None and int(self.size) < 1:
            raise ValueError(f"crop size must be a positive number of pixels or null, got {self.size}")
        if self.center is not None and len(self.center) != 2:
            raise ValueError(f"crop center must be [x, y] in pixels or null, got {list(self.center)}")

    @classmethod
    def from_config(cls, size: int | None, center: Sequence[float] | None) -> Crop:
        return cls(None if size is None else int(size),
                   None if center is None else tuple(float(v) for v in center))  # type: ignore[arg-type]

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of the crop inside a ``width`` x ``height`` image."""
        side = min(width, height) if self.size is None else min(int(self.size), width, height)
        cx, cy = self.center if self.center is not None else (width / 2, height / 2)
        left = min(max(int(np.floor(cx - side / 2 + 0.5)), 0), width - side)
        top = min(max(int(np.floor(cy - side / 2 + 0.5)), 0), height - side)
        return left, top, left + side, top + side

    def as_dict(self) -> dict:
        return {"size": self.size, "center": None if self.center is None else list(self.center)}


def crop_resize(image: Image.Image, resolution: int, crop: Crop) -> np.ndarray:
    """Crop ``image`` (any mode) and resize to ``resolution``; uint8 array (H, W, 3)."""
    if image.mode.startswith("I"):
        image = _to_8_bit(image)
    if image.mode != "RGB":
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")  # PIL warns on P -> RGB with transparency
        image = image.convert("RGB")
    box = crop.box(*image.size)
    if box == (0, 0, resolution, resolution) and image.size == (resolution, resolution):
        out = image
    else:
        out = image.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box)
    return np.asarray(out, dtype=np.uint8)


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale (PNG's ``I;16``, or ``I``) as 8-bit ``L``: PIL's own conversion clips
    every value above 255, so a 16-bit face would become a white square."""
    values = np.asarray(image).astype(np.float64) / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def load_image(path: str | os.PathLike, resolution: int, crop: Crop) -> np.ndarray:
    """Decode one file fully (truncated files raise) and crop/resize it; uint8 (H, W, 3)."""
    with Image.open(path) as image:
        image.load()
        return crop_resize(image, resolution, crop)


def to_tensor(array: np.ndarray, flip: bool = False) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1], optionally mirrored left-right."""
    image = torch.from_numpy(np.array(array, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    if flip:
        image = image.flip(2)
    return image.float().div_(127.5).sub_(1.0)


def find_images(root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Image files under ``root`` (recursively, case-insensitive extensions), as sorted
    POSIX paths relative to ``root``. Hidden files and directories are skipped."""
    root = Path(root)
    exts = tuple(e.lower() for e in extensions)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(exts):
                found.append((rel / name).as_posix())
    return sorted(found)
