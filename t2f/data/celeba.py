"""``dataset=celeba``: the official aligned CelebA release, with captions from its attributes.

Layout (``dataset.root``; the Google Drive folders ``Img/``, ``Anno/``, ``Eval/`` also work)::

    img_align_celeba/000001.jpg ...   202,599 aligned 178x218 JPEGs
    list_attr_celeba.txt              line 1: image count; line 2: the 40 attribute names;
                                      then "000001.jpg -1  1  1 ..." (runs of spaces)
    list_eval_partition.txt           "000001.jpg 0" with 0/1/2 = train/val/test

Attributes are exposed as 0/1 (``attributes`` in each item, names in
``attribute_names``). Captions are generated from them: varied templates that mention only
attributes the image has (plus the gender), e.g. "This smiling woman has wavy blond hair
and arched eyebrows."; each image has ``captions_per_image`` of them, fixed by
``caption_seed``, and a training item draws one. :func:`caption_attributes` reads the
attributes back from a caption (for tests and text-image agreement checks).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from t2f.data.attributes import AttributeTask
from t2f.data.images import ImageDataModule, report
from t2f.data.vocab import Vocabulary, tokenize

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)

# ----------------------------------------------------------------------------- captions
# Every phrase below is used for generation, for the fixed vocabulary, and (as the
# attribute's signature) for parsing captions back with caption_attributes().

_ADJ = {  # before the noun, or "<he> is ..."
    "Smiling": ("smiling",), "Attractive": ("attractive", "good-looking"), "Young": ("young",),
    "Chubby": ("chubby",), "Bald": ("bald",),
}
_HAS = {  # after "has" / "with"
    "Smiling": ("a smile", "a big smile"),
    "Bald": ("a bald head",),
    "Bangs": ("bangs",),
    "Receding_Hairline": ("a receding hairline",),
    "Arched_Eyebrows": ("arched eyebrows",),
    "Bushy_Eyebrows": ("bushy eyebrows",),
    "Bags_Under_Eyes": ("bags under the eyes",),
    "Big_Lips": ("big lips", "full lips"),
    "Big_Nose": ("a big nose", "a large nose"),
    "Pointy_Nose": ("a pointy nose", "a pointed nose"),
    "Narrow_Eyes": ("narrow eyes",),
    "High_Cheekbones": ("high cheekbones",),
    "Rosy_Cheeks": ("rosy cheeks",),
    "Oval_Face": ("an oval face",),
    "Double_Chin": ("a double chin",),
    "Mouth_Slightly_Open": ("a slightly open mouth", "slightly parted lips"),
    "Pale_Skin": ("pale skin", "a pale complexion"),
    "5_o_Clock_Shadow": ("a five o'clock shadow", "stubble"),
    "Goatee": ("a goatee",),
    "Mustache": ("a mustache", "a moustache"),
    "Sideburns": ("sideburns",),
    "Beard": ("a beard",),  # No_Beard == 0
}
_WEAR = {  # after "wearing" / "wears"
    "Eyeglasses": ("glasses", "eyeglasses"),
    "Wearing_Hat": ("a hat",),
    "Wearing_Earrings": ("earrings",),
    "Wearing_Lipstick": ("lipstick",),
    "Wearing_Necklace": ("a necklace",),
    "Wearing_Necktie": ("a tie", "a necktie"),
    "Heavy_Makeup": ("heavy makeup",),
}
_HAIR_COLOR = {"Black_Hair": ("black",), "Blond_Hair": ("blond",), "Brown_Hair": ("brown",),
               "Gray_Hair": ("gray", "grey")}
_HAIR_TEXTURE = {"Wavy_Hair": ("wavy",), "Straight_Hair": ("straight",)}
_NOUNS = {True: ("man", "guy", "gentleman"), False: ("woman", "lady")}
_PRONOUNS = {True: ("he",), False: ("she",)}
_LEADS = ("a photo of", "a picture of", "a portrait of", "a close-up of")
_BLURRY_LEADS = ("a blurry photo of", "a blurry picture of")
_TEMPLATE_WORDS = "this is a an the has with and wearing wears hair"


def _pick(rng: random.Random, options: Sequence[str]) -> str:
    return options[int(rng.random() * len(options))]


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _units(present: set[str]) -> list[str]:
    """The mentionable units of an image: attribute names plus "Hair" and "Beard"."""
    units = [a for a in (*_ADJ, *_HAS, *_WEAR) if a in present and a != "Bald"]
    if "Bald" in present:
        units.append("Bald")
    elif present & (set(_HAIR_COLOR) | set(_HAIR_TEXTURE)):
        units.append("Hair")
    if "No_Beard" not in present:
        units.append("Beard")
    return list(dict.fromkeys(units))


def _hair(present: set[str], rng: random.Random) -> str:
    texture = [_pick(rng, w) for a, w in _HAIR_TEXTURE.items() if a in present][:1]
    colors = [_pick(rng, w) for a, w in _HAIR_COLOR.items() if a in present]
    color = " and ".join(colors[:2])
    return " ".join([*texture, color, "hair"] if color else [*texture, "hair"])


def make_caption(present: set[str], rng: random.Random, max_mentions: int = 5) -> str:
    """One caption for an image whose present attributes are ``present`` (CelebA names)."""
    male = "Male" in present
    he = _PRONOUNS[male][0]
    noun = _pick(rng, _NOUNS[male])
    units = _units(present)
    rng.shuffle(units)
    lead_blurry = "Blurry" in present and rng.random() < 0.5
    units = units[: rng.randint(min(2, len(units)), min(max_mentions, len(units)))] if units else []

    adjs: list[str] = []
    has: list[str] = []
    wear: list[str] = []
    for unit in units:
        if unit == "Hair":
            has.append(_hair(present, rng))
            continue
        if unit == "Beard":
            has.append(_pick(rng, _HAS["Beard"]))
            continue
        slots = [s for s, table in (("adj", _ADJ), ("has", _HAS), ("wear", _WEAR)) if unit in table]
        if "adj" in slots and (len(adjs) >= 2 or (len(slots) > 1 and rng.random() < 0.5)):
            slots.remove("adj")  # at most two adjectives before the noun
        if not slots:
            continue
        slot = rng.choice(slots)
        {"adj": adjs, "has": has, "wear": wear}[slot].append(
            _pick(rng, {"adj": _ADJ, "has": _HAS, "wear": _WEAR}[slot][unit]))

    head = " ".join([*adjs, noun])
    style = rng.choice(("has", "has", "with", "photo", "sentences"))
    if lead_blurry:
        style = "photo"
    if style == "has" and has:
        text = f"{rng.choice(('this', 'the'))} {head} has {_join(has)}."
        if wear:
            text += f" {he} {rng.choice(('is wearing', 'wears'))} {_join(wear)}."
    elif style == "sentences" and (has or wear):
        parts = []
        if adjs:
            parts.append(f"this {noun} is {_join(adjs)}.")
        else:
            parts.append(f"this is {_article(noun)} {noun}.")
        if has:
            parts.append(f"{he} has {_join(has)}.")
        if wear:
            parts.append(f"{he} is wearing {_join(wear)}.")
        text = " ".join(parts)
    else:
        lead = ""
        if style == "photo" or lead_blurry:
            lead = _pick(rng, _BLURRY_LEADS if lead_blurry else _LEADS) + " "
        text = f"{lead}{_article(head)} {head}"
        if has:
            text += f" with {_join(has)}"
        if wear:
            text += f"{',' if has else ''} wearing {_join(wear)}"
        text += "."
    return ". ".join(s[:1].upper() + s[1:] for s in text.split(". "))


def caption_vocabulary() -> Vocabulary:
    """All words :func:`make_caption` can produce, in a fixed order."""
    texts = [_TEMPLATE_WORDS, *_LEADS, *_BLURRY_LEADS]
    for table in (_ADJ, _HAS, _WEAR, _HAIR_COLOR, _HAIR_TEXTURE, _NOUNS, _PRONOUNS):
        texts += [p for phrases in table.values() for p in phrases]
    return Vocabulary.build(texts)


def _signature(phrase: str) -> str:
    words = tokenize(phrase)
    words = words[1:] if words[0] in ("a", "an") else words
    return r"\b" + r"\s+".join(map(re.escape, words)) + r"\b"


_SIGNATURES: dict[str, re.Pattern] = {}
for _table in (_ADJ, _HAS, _WEAR, _HAIR_COLOR, _HAIR_TEXTURE):
    for _attr, _phrases in _table.items():
        name = "No_Beard" if _attr == "Beard" else _attr
        old = _SIGNATURES.get(name)
        pattern = "|".join(_signature(p) for p in _phrases)
        _SIGNATURES[name] = re.compile(f"{old.pattern}|{pattern}" if old else pattern)
_SIGNATURES["Blurry"] = re.compile(r"\bblurry\b")


def caption_attributes(text: str) -> tuple[bool | None, set[str]]:
    """``(male, mentioned)``: the gender a caption states (None if none) and the attribute
    names it mentions (``No_Beard`` stands for "mentions a beard", i.e. No_Beard is 0)."""
    words = tokenize(text)
    male = True if set(words) & {"man", "guy", "gentleman", "he", "his"} else (
        False if set(words) & {"woman", "lady", "she", "her"} else None)
    flat = " ".join(words)
    return male, {name for name, pattern in _SIGNATURES.items() if pattern.search(flat)}


class AttributeCaptions:
    """``count`` captions per image, generated on demand from its attributes with a fixed seed."""

    def __init__(self, attributes: np.ndarray, names: Sequence[str], rows: Sequence[int],
                 per_image: int, seed: int, max_mentions: int = 5) -> None:
        self.attributes, self.names = attributes, list(names)
        self.rows = np.asarray(rows)
        self.per_image, self.seed, self.max_mentions = int(per_image), int(seed), int(max_mentions)

    def count(self, i: int) -> int:
        return self.per_image

    def get(self, i: int, j: int) -> str:
        row = int(self.rows[i])
        present = {n for n, v in zip(self.names, self.attributes[i]) if v}
        return make_caption(present, random.Random((self.seed << 42) ^ (row << 10) ^ j), self.max_mentions)


# ----------------------------------------------------------------------------- the files

def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``(file names, attribute names, 0/1 int64 array)`` from list_attr_celeba.txt."""
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path} is too short: line 1 must be the image count, line 2 the attribute names")
    try:
        count = int(lines[0].split()[0])
    except (ValueError, IndexError):
        raise ValueError(f"{path} line 1 must be the image count, got {lines[0]!r}") from None
    names = lines[1].split()
    files, values = [], []
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise ValueError(f"{path} line {lineno} has {len(parts) - 1} values for {len(names)} attributes: "
                             f"{line[:80]!r}")
        bad = next((p for p in parts[1:] if p not in ("1", "-1")), None)
        if bad is not None:
            raise ValueError(f"{path} line {lineno}: attribute values must be 1 or -1, got {bad!r}")
        files.append(parts[0])
        values.append(parts[1:])
    if count != len(files):
        raise ValueError(f"{path} line 1 says {count} images but the file has {len(files)} rows")
    array = (np.array(values, dtype=np.int64) > 0).astype(np.int64) if values else np.zeros((0, len(names)), np.int64)
    return files, names, array


def read_partition(path: Path) -> tuple[list[str], np.ndarray]:
    files, parts = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(f"{path} line {lineno} must be '<file> <0|1|2>', got {line[:80]!r}")
        files.append(fields[0])
        parts.append(int(fields[1]))
    return files, np.array(parts, dtype=np.int64)


SPLITS = {"train": (0,), "trainval": (0, 1), "all": (0, 1, 2)}


def _mentioned_values(text: str) -> dict[str, int]:
    male, mentioned = caption_attributes(text)
    found = {name: (0 if name == "No_Beard" else 1) for name in mentioned}
    if male is not None:
        found["Male"] = int(male)
    return found


def celeba_attribute_task(names: Sequence[str]) -> AttributeTask:
    """Binary attributes ``names`` (the annotation file's columns), read from generated captions."""
    return AttributeTask("celeba", tuple(names), (2,) * len(names), _mentioned_values)


class CelebADataModule(ImageDataModule):
    """``dataset=celeba``: see the module docstring."""

    name = "celeba"
    SOURCE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Align&Cropped Images + annotations)"
    LAYOUT = ("  img_align_celeba/000001.jpg ...   (aligned 178x218 JPEGs)\n"
              "  list_attr_celeba.txt\n"
              "  list_eval_partition.txt\n"
              "(the release's Img/, Anno/ and Eval/ folders are found too)")

    def __init__(self, root: str | os.PathLike, crop_size: int | None = 178, train_split: str = "train",
                 captions_per_image: int = 5, caption_seed: int = 0, max_mentions: int = 5, **kwargs: Any) -> None:
        super().__init__(root, crop_size=crop_size, **kwargs)
        if train_split not in SPLITS:
            raise ValueError(f"dataset.train_split={train_split} must be one of {', '.join(SPLITS)}")
        if captions_per_image < 1:
            raise ValueError(f"dataset.captions_per_image={captions_per_image} must be positive")
        self.train_split = train_split
        self.captions_per_image, self.caption_seed = int(captions_per_image), int(caption_seed)
        self.max_mentions = int(max_mentions)
        self.attribute_names: list[str] = []
        self.attributes: np.ndarray | None = None
        self.partition: np.ndarray | None = None
        self.held_out_rows: np.ndarray | None = None

    def _find(self, name: str, folder: str, want_dir: bool = False) -> Path:
        for candidate in (self.root / name, self.root / folder / name):
            if candidate.is_dir() if want_dir else candidate.is_file():
                return candidate
        raise self.missing(f"{name} was not found in dataset.root={self.root}.")

    def build(self) -> None:
        self.check_root()
        attr_path = self._find("list_attr_celeba.txt", "Anno")
        part_path = self._find("list_eval_partition.txt", "Eval")
        image_dir = self._find("img_align_celeba", "Img", want_dir=True)
        if (image_dir / "img_align_celeba").is_dir() and not (image_dir / "000001.jpg").exists():
            image_dir = image_dir / "img_align_celeba"  # archives that unpack into a doubled folder

        files, names, attributes = read_attributes(attr_path)
        part_files, partition = read_partition(part_path)
        for row, (a, p) in enumerate(zip(files, part_files)):
            if a != p:
                raise ValueError(f"{attr_path.name} and {part_path.name} disagree at image row {row + 1}: "
                                 f"{a} vs {p}; both must list the same images in the same order")
        if len(files) != len(part_files):
            longer, shorter = (attr_path, part_path) if len(files) > len(part_files) else (part_path, attr_path)
            first = (files if len(files) > len(part_files) else part_files)[min(len(files), len(part_files))]
            raise ValueError(f"{longer.name} lists {first} (row {min(len(files), len(part_files)) + 1}) and "
                             f"more images that {shorter.name} does not: use the two files of one release")
        on_disk = set(os.listdir(image_dir))
        missing = [f for f in files if f not in on_disk]
        if missing:
            raise self.missing(f"{len(missing)} of the {len(files)} images listed in {attr_path.name} are missing "
                               f"from {image_dir}, the first is {missing[0]}.")

        self.attribute_names, self.attributes, self.partition = names, attributes, partition
        self.vocab = caption_vocabulary()
        usable = self.open_images(files, base=image_dir)
        train_rows = usable[np.isin(partition[usable], SPLITS[self.train_split])]
        val_rows = usable[partition[usable] == 1]
        self.held_out_rows = usable[~np.isin(partition[usable], SPLITS[self.train_split])]
        self.train_set = self._make(train_rows, train=True)
        self.val_set = self._make(val_rows, train=False)
        report(f"celeba: {len(train_rows)} training images ({self.train_split}), {len(val_rows)} validation")

    def attribute_task(self) -> AttributeTask:
        self.setup("fit")
        return celeba_attribute_task(self.attribute_names)

    def held_out_set(self):
        """The images of every partition outside ``dataset.train_split`` (val and test for
        ``train``): the validation set alone is partition 1."""
        self.setup()
        return self._make(self.held_out_rows, train=False)

    def _make(self, rows: np.ndarray, train: bool):
        captions = AttributeCaptions(self.attributes[rows], self.attribute_names, rows,
                                     self.captions_per_image, self.caption_seed, self.max_mentions)
        return self.make_set(rows, train=train, captions=captions, attributes=self.attributes[rows])

    def sample_captions(self, n: int, seed: int = 0) -> list[str]:
        self.setup()
        pool = self.val_set if len(self.val_set) else self.train_set
        picks = np.random.default_rng(seed).choice(len(pool), size=n, replace=n > len(pool))
        return [pool.captions.get(int(i), 0) for i in picks]
