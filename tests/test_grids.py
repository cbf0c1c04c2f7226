"""Sample grids: a real TrueType font that scales with the faces, captions wrapped with their spaces."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from t2f.grids import caption_font, fit_lines, font_path, font_size_for, grid_image, wrap

LONG = ("This woman has black hair, arched eyebrows and a pale complexion. She wears heavy makeup "
        "and lipstick and earrings, and she is smiling with a big smile.")


def ink_rows(picture: Image.Image, left: int) -> np.ndarray:
    """Rows of the label column (from x = left) that hold any dark pixel."""
    label = np.asarray(picture.convert("L"))[:, left:]
    return np.flatnonzero((label < 128).any(axis=1))


def test_captions_use_the_truetype_font_shipped_with_a_dependency() -> None:
    assert font_path() is not None and font_path().name == "DejaVuSans.ttf"
    font = caption_font(13)
    assert isinstance(font, ImageFont.FreeTypeFont) and font.size == 13


def test_wrap_keeps_spaces_and_breaks_only_between_words() -> None:
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = caption_font(13)
    assert wrap("He has a beard.", font, 1000, draw) == ["He has a beard."]
    lines = wrap(LONG, font, 200, draw)
    assert len(lines) > 2
    assert " ".join(lines) == LONG  # nothing lost, no word split, single spaces kept
    assert all(draw.textlength(line, font=font) <= 200 for line in lines if " " in line)


def test_a_caption_longer_than_its_row_ends_with_an_ellipsis() -> None:
    assert fit_lines(["a b", "c d", "e f."], 2) == ["a b", "c d …"]
    assert fit_lines(["a b"], 3) == ["a b"]


def test_every_row_gets_its_caption_beside_it_and_long_ones_wrap() -> None:
    images = torch.zeros(8, 3, 32, 32)
    picture = grid_image(images, 4, ["He has a beard.", LONG])
    faces_width = 4 * (64 + 2) + 2  # 32 px faces are enlarged to 64 px cells
    assert picture.height == 2 * (64 + 2) + 2 and picture.width > faces_width
    rows = ink_rows(picture, faces_width)
    first, second = rows[rows < 68], rows[rows >= 68]
    assert len(first) and len(second)  # a caption in each row's band
    assert np.ptp(second) > 2 * np.ptp(first)  # the long caption wrapped onto several lines
    assert picture.width - faces_width < 5 * 66  # ... instead of one very wide line


def test_the_font_grows_with_the_faces() -> None:
    assert font_size_for(64) < font_size_for(128) <= 32
    small = grid_image(torch.zeros(4, 3, 64, 64), 4, ["Hg"])
    large = grid_image(torch.zeros(4, 3, 128, 128), 4, ["Hg"])
    height = [np.ptp(ink_rows(p, 4 * (s + 2) + 2)) for p, s in ((small, 64), (large, 128))]
    assert height[1] > 1.5 * height[0]
