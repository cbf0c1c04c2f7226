"""Sample grids as pictures: faces in rows, each row's caption beside it, readable at any size.

Captions are drawn in DejaVu Sans, the TrueType font that ships with matplotlib (a dependency),
so grids look the same offline on every machine; Pillow's built-in bitmap font is the fallback.
The font grows with the cell size and a caption wraps onto as many lines as its row holds.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

PADDING = 2  # pixels between cells (torchvision's make_grid)
LABEL_CELLS = 4  # a caption wraps at about this many cells' width


@lru_cache(maxsize=1)
def font_path() -> Path | None:
    """DejaVu Sans from matplotlib's data folder, found without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return path if path.is_file() else None


@lru_cache(maxsize=16)
def caption_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = font_path()
    if path is not None:
        return ImageFont.truetype(str(path), size)
    try:
        return ImageFont.load_default(size)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()  # older Pillow: the fixed bitmap font


def font_size_for(cell: int) -> int:
    """About a fifth of a cell: 12-13 px beside 64 px faces, 25 px beside 128 px faces."""
    return max(11, min(32, round(cell / 5)))


def wrap(text: str, font: ImageFont.ImageFont, width: float, draw: ImageDraw.ImageDraw) -> list[str]:
    """Greedy word wrap at ``width`` pixels; words are never split and spaces are kept."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            candidate = word if not line else f"{line} {word}"
            if line and draw.textlength(candidate, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def fit_lines(lines: list[str], max_lines: int) -> list[str]:
    """At most ``max_lines`` lines; a cut caption ends with an ellipsis."""
    if len(lines) <= max_lines:
        return lines
    kept = lines[:max(1, max_lines)]
    kept[-1] = kept[-1].rstrip(" .,;") + " …"
    return kept


def grid_image(images: torch.Tensor, nrow: int, row_labels: list[str] | None = None,
               min_size: int = 64) -> Image.Image:
    """A PIL grid of images in [-1, 1]; with ``row_labels``, each row's text is printed beside it.

    Images smaller than ``min_size`` (early progressive stages) are enlarged with nearest
    neighbours so that every grid of a run is readable at the same scale.
    """
    if images.shape[-1] < min_size:
        images = torch.nn.functional.interpolate(images.float(), scale_factor=min_size // images.shape[-1])
    grid = make_grid(images.float().cpu(), nrow=nrow, padding=PADDING, normalize=True, value_range=(-1, 1))
    array = grid.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    picture = Image.fromarray(array)
    if not row_labels:
        return picture
    cell = int(images.shape[-1])
    font = caption_font(font_size_for(cell))
    measure = ImageDraw.Draw(picture)
    line_height = font.getbbox("Hg")[3] + max(2, cell // 32)
    row_height = (picture.height - PADDING) / len(row_labels)
    max_lines = max(1, int((row_height - PADDING) // line_height))
    wrap_width = LABEL_CELLS * (cell + PADDING)
    blocks = [fit_lines(wrap(text, font, wrap_width, measure), max_lines) for text in row_labels]
    margin = max(6, cell // 10)
    text_width = max(int(measure.textlength(line, font=font)) for block in blocks for line in block) + 2 * margin
    canvas = Image.new("RGB", (picture.width + text_width, picture.height), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, block in enumerate(blocks):
        top = PADDING + row * row_height + (row_height - PADDING - len(block) * line_height) / 2
        for k, line in enumerate(block):
            draw.text((picture.width + margin, int(top + k * line_height)), line, fill="black", font=font)
    return canvas
