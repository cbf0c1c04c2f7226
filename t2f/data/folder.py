"""``dataset=folder``: any directory of face images (e.g. FFHQ thumbnails), optionally captioned.

Images are found recursively (``.jpg .jpeg .png .bmp .webp``, any case; hidden files and
folders are skipped) and ordered by relative path. ``dataset.crop_size`` (default: the
largest centred square) and ``dataset.resolution`` apply to every image.

Captions (optional, ``dataset.captions=FILE``, relative to the root or absolute) come in one
of two formats, chosen by the file's extension:

``.json``: one object mapping an image's path relative to the root to its caption(s)::

    {"00000.png": ["a smiling woman with red hair", "a woman smiling"],
     "sub/00001.png": "a man with glasses"}

``.jsonl``: one object per line with ``image`` and ``caption`` (a string or a list)::

    {"image": "00000.png", "caption": "a smiling woman with red hair"}

An image named twice gets all its captions. With captions, only captioned images are used
(the others are counted and reported); a caption naming an image that is not under the
root is an error naming it; empty captions are skipped and counted.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from t2f.data.images import ImageDataModule, ListCaptions, report, split_by_group
from t2f.data.transforms import IMAGE_EXTENSIONS, find_images
from t2f.data.vocab import Vocabulary, tokenize
from t2f.utils import read_utf8


def read_captions(path: Path) -> dict[str, list[object]]:
    """``{relative image path: [caption, ...]}`` from a ``.json`` or ``.jsonl`` sidecar."""
    text = read_utf8(path)
    out: dict[str, list[object]] = {}

    def add(image: object, captions: object, where: str) -> None:
        if not isinstance(image, str):
            raise ValueError(f"{where}: the image must be a relative path string, got {image!r}")
        items = captions if isinstance(captions, list) else [captions]
        out.setdefault(Path(image.replace("\\", "/")).as_posix(), []).extend(items)

    if path.suffix.lower() == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {lineno} is not valid JSON: {e}") from None
            if not isinstance(row, dict) or "image" not in row or not ({"caption", "captions"} & set(row)):
                raise ValueError(f"{path} line {lineno} must be {{\"image\": PATH, \"caption\": TEXT or [TEXT, ...]}}")
            add(row["image"], row.get("caption", row.get("captions")), f"{path} line {lineno}")
    elif path.suffix.lower() == ".json":
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(mapping, dict):
            raise ValueError(f"{path} must hold one JSON object {{relative image path: caption or [captions]}}")
        for image, captions in mapping.items():
            add(image, captions, str(path))
    else:
        raise ValueError(f"dataset.captions={path}: use a .json or .jsonl file (see t2f/data/folder.py)")
    return out


class FolderDataModule(ImageDataModule):
    """``dataset=folder``: see the module docstring."""

    name = "folder"
    SOURCE = "any folder of your own images, e.g. FFHQ (https://github.com/NVlabs/ffhq-dataset)"
    LAYOUT = (f"  any tree of image files ({', '.join(IMAGE_EXTENSIONS)}), e.g. 00000/00000.png ...\n"
              "  optionally a captions file (.json or .jsonl, see t2f/data/folder.py)")

    def __init__(self, root: str | os.PathLike, crop_size: int | None = None, captions: str | None = None,
                 val_fraction: float = 0.0, split_seed: int = 0, min_freq: int = 1, **kwargs: Any) -> None:
        super().__init__(root, crop_size=crop_size, **kwargs)
        self.captions_file = captions
        self.val_fraction, self.split_seed, self.min_freq = float(val_fraction), int(split_seed), int(min_freq)
        self.uncaptioned = 0
        self.empty_captions = 0

    def build(self) -> None:
        self.check_root()
        files = find_images(self.root)
        if not files:
            raise self.missing(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) were found under {self.root}.")
        captions: list[list[str]] | None = None
        if self.captions_file:
            files, captions = self._captioned(files)
        usable = self.open_images(files)
        train_rows, val_rows = split_by_group(len(usable), self.val_fraction, self.split_seed)
        train_rows, val_rows = usable[train_rows], usable[val_rows]
        if captions is not None:
            self.vocab = Vocabulary.build((t for i in train_rows for t in captions[i]), min_freq=self.min_freq)
        self.train_set = self._make(train_rows, captions, train=True)
        self.val_set = self._make(val_rows, captions, train=False)
        report(f"folder: {len(train_rows)} training and {len(val_rows)} validation images from {self.root}"
               + (f", vocabulary of {len(self.vocab)}" if self.vocab is not None else ""))

    def _captioned(self, files: list[str]) -> tuple[list[str], list[list[str]]]:
        path = Path(self.captions_file).expanduser()
        path = path if path.is_absolute() else self.root / path
        if not path.is_file():
            raise FileNotFoundError(f"dataset.captions={self.captions_file}: {path} does not exist")
        mapping = read_captions(path)
        known = set(files)
        unknown = [name for name in mapping if name not in known]
        if unknown:
            raise ValueError(f"{path} has captions for {len(unknown)} image(s) not found under {self.root}, "
                             f"the first is {unknown[0]!r} (paths are relative to dataset.root)")
        kept_files, kept_captions = [], []
        self.empty_captions = 0
        for name in files:
            texts = []
            for t in mapping.get(name, []):
                if isinstance(t, str) and tokenize(t):
                    texts.append(" ".join(t.split()))
                else:
                    self.empty_captions += 1
            if texts:
                kept_files.append(name)
                kept_captions.append(texts)
        self.uncaptioned = len(files) - len(kept_files)
        if self.empty_captions:
            warnings.warn(f"{path.name}: skipped {self.empty_captions} empty or whitespace-only caption(s)",
                          stacklevel=3)
        if self.uncaptioned:
            report(f"folder: {self.uncaptioned} of {len(files)} images have no caption in {path.name} "
                   "and are not used")
        if not kept_files:
            raise ValueError(f"{path} gives no usable caption for any image under {self.root}")
        return kept_files, kept_captions

    def _make(self, rows: np.ndarray, captions: list[list[str]] | None, train: bool):
        source = ListCaptions([captions[i] for i in rows]) if captions is not None else None
        return self.make_set(rows, train=train, captions=source)

    def sample_captions(self, n: int, seed: int = 0) -> list[str]:
        self.setup()
        if self.vocab is None:
            return super().sample_captions(n, seed)
        pool = self.val_set if len(self.val_set) else self.train_set
        picks = np.random.default_rng(seed).choice(len(pool), size=n, replace=n > len(pool))
        return [pool.captions.get(int(i), 0) for i in picks]
