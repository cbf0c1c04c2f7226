"""``dataset=face2text``: Face2Text v0.1 descriptions over LFW images.

Layout (``dataset.root``)::

    clean.json            (or raw.json: dataset.annotations=raw.json)
    lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg ...

The annotation file is a JSON list of
``{"img_id": int, "image": "Name/Name_0001.bmp", "descriptions": [{"desc_id": int, "text": str}]}``.
It names ``.bmp`` files while LFW ships ``.jpg``: a name is looked up as given, then with
a ``.jpg`` suffix. Images that are missing are reported and left out. There is one sample
per (image, description); the train/validation split is by image, never by description,
so no validation face is seen in training. Empty or whitespace-only descriptions are
skipped and counted. The vocabulary is built from the training descriptions
(``dataset.min_freq``) and travels with checkpoints.

LFW frames are 250x250 with the face in the middle: ``dataset.crop_size`` (default 150)
keeps the centred face before resizing.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from t2f.data.images import ImageDataModule, ListCaptions, report, split_by_group
from t2f.data.vocab import Vocabulary, tokenize
from t2f.utils import read_utf8


def read_annotations(path: Path) -> tuple[dict[str, list[str]], int]:
    """``({image name: [descriptions]}, number of empty descriptions skipped)``; images in
    file order, descriptions of an image listed twice are merged."""
    try:
        entries = json.loads(read_utf8(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path} must hold a JSON list of {{'img_id', 'image', 'descriptions'}} entries")
    images: dict[str, list[str]] = {}
    empty = 0
    for k, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("image"), str)
                and isinstance(entry.get("descriptions"), list)):
            raise ValueError(f"{path} entry {k} must have 'image' (a path) and 'descriptions' (a list); "
                             f"got {str(entry)[:120]}")
        texts = images.setdefault(entry["image"].replace("\\", "/"), [])
        for d in entry["descriptions"]:
            text = d.get("text") if isinstance(d, dict) else d
            if not isinstance(text, str) or not tokenize(text):
                empty += 1
                continue
            texts.append(" ".join(text.split()))
    return images, empty


class Face2TextDataModule(ImageDataModule):
    """``dataset=face2text``: see the module docstring."""

    name = "face2text"
    SOURCE = ("the Face2Text paper (Gatt et al., 'Face2Text: Collecting an Annotated Image Description "
              "Corpus for the Generation of Rich Face Descriptions', LREC 2018) and its release page for "
              "the annotations; http://vis-www.cs.umass.edu/lfw for the LFW images")
    LAYOUT = ("  clean.json                           (Face2Text v0.1 annotations; or raw.json)\n"
              "  lfw/Name/Name_0001.jpg ...           (the LFW images, 250x250)")

    def __init__(self, root: str | os.PathLike, annotations: str = "clean.json", images: str = "lfw",
                 crop_size: int | None = 150, val_fraction: float = 0.1, split_seed: int = 0,
                 min_freq: int = 1, **kwargs: Any) -> None:
        super().__init__(root, crop_size=crop_size, **kwargs)
        self.annotations, self.images = annotations, images
        self.val_fraction, self.split_seed, self.min_freq = float(val_fraction), int(split_seed), int(min_freq)
        self.missing_images: list[str] = []
        self.empty_captions = 0

    def _resolve(self, image_dir: Path, name: str) -> str | None:
        for candidate in (name, str(Path(name).with_suffix(".jpg"))):
            if (image_dir / candidate).is_file():
                return candidate
        return None

    def build(self) -> None:
        self.check_root()
        ann_path = Path(self.annotations).expanduser()
        ann_path = ann_path if ann_path.is_absolute() else self.root / ann_path
        if not ann_path.is_file():
            raise self.missing(f"the annotation file {ann_path} does not exist.")
        image_dir = self.root / self.images
        if not image_dir.is_dir():
            raise self.missing(f"the LFW image folder {image_dir} does not exist.")

        described, self.empty_captions = read_annotations(ann_path)
        if self.empty_captions:
            warnings.warn(f"{ann_path.name}: skipped {self.empty_captions} empty or whitespace-only "
                          "description(s)", stacklevel=2)
        files, captions = [], []
        self.missing_images = []
        for name, texts in described.items():
            found = self._resolve(image_dir, name)
            if found is None:
                self.missing_images.append(name)
            elif texts:
                files.append(found)
                captions.append(texts)
        if self.missing_images:
            first = ", ".join(self.missing_images[:3])
            warnings.warn(f"{len(self.missing_images)} of the {len(described)} images named in {ann_path.name} "
                          f"are missing from {image_dir} (looked for the name and its .jpg): {first}"
                          f"{' ...' if len(self.missing_images) > 3 else ''}", stacklevel=2)
        if not files:
            raise self.missing(f"none of the {len(described)} described images was found under {image_dir}.")

        usable = self.open_images(files, base=image_dir)
        train_images, val_images = split_by_group(len(usable), self.val_fraction, self.split_seed)
        train_images, val_images = usable[train_images], usable[val_images]
        self.vocab = Vocabulary.build((t for i in train_images for t in captions[i]), min_freq=self.min_freq)
        self.train_set = self._make(train_images, captions, train=True)
        self.val_set = self._make(val_images, captions, train=False)
        report(f"face2text: {len(train_images)} training images ({len(self.train_set)} descriptions), "
               f"{len(val_images)} validation images ({len(self.val_set)} descriptions), "
               f"vocabulary of {len(self.vocab)}")

    def _make(self, image_rows: np.ndarray, captions: list[list[str]], train: bool):
        rows = [int(i) for i in image_rows for _ in captions[i]]  # one sample per description
        texts = [[t] for i in image_rows for t in captions[i]]
        return self.make_set(rows, train=train, captions=ListCaptions(texts))

    def sample_captions(self, n: int, seed: int = 0) -> list[str]:
        self.setup()
        pool = self.val_set if len(self.val_set) else self.train_set
        picks = np.random.default_rng(seed).choice(len(pool), size=n, replace=n > len(pool))
        return [pool.captions.get(int(i), 0) for i in picks]
