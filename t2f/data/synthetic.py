"""Built-in synthetic face dataset: procedurally drawn cartoon faces with captions.

Every image is drawn with PIL from a small set of categorical attributes (gender, skin
tone, hair colour and length, eye colour, glasses, smile, beard, background colour) plus
nuisance jitter (pose, scale, face shape, hair shape, clothing, lighting), so a model has
a real but quickly learnable problem, and every caption is generated from the same
attributes, so text-image agreement can be checked exactly with :func:`parse_caption`.

Image ``i`` of a dataset with seed ``s`` depends only on ``np.random.default_rng([s, i])``:
rendering order does not matter and large sets render in parallel. The rendered arrays
are cached once per (size, resolution, seed, captions_per_image, RENDER_VERSION).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset, Subset

from t2f.data.attributes import AttributeTask
from t2f.data.base import FaceDataModule
from t2f.data.vocab import Vocabulary
from t2f.utils import check_writable_dir

# Bump whenever drawing, attribute sampling or caption generation changes: it is part of
# the cache key, so stale caches are never reused.
RENDER_VERSION = 1

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "gender": ("man", "woman"),
    "skin_tone": ("pale", "light", "tan", "dark"),
    "hair_color": ("black", "brown", "blond", "red", "grey", "white"),
    "hair_length": ("bald", "short", "long"),
    "eye_color": ("brown", "blue", "green"),
    "glasses": ("no", "yes"),
    "smile": ("no", "yes"),
    "beard": ("no", "yes"),
    "background": ("blue", "green", "yellow", "pink", "purple", "orange"),
}
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(ATTRIBUTES)

MIN_RESOLUTION, MAX_RESOLUTION = 8, 128
SUPERSAMPLE = 4  # drawn at 4x the output resolution, then box-filtered down

# ----------------------------------------------------------------------------- colours

_SKIN = np.array([(255, 226, 204), (236, 188, 148), (192, 132, 86), (112, 70, 44)], np.float32)
_HAIR = np.array(
    [(24, 20, 20), (112, 62, 26), (244, 206, 78), (212, 64, 22), (138, 138, 144), (244, 244, 240)], np.float32
)
_EYES = np.array([(104, 52, 16), (30, 110, 245), (24, 170, 50)], np.float32)
_BACKGROUND = np.array(
    [(70, 140, 240), (84, 196, 96), (250, 220, 60), (248, 150, 205), (150, 90, 215), (250, 140, 40)], np.float32
)
_SHIRTS = np.array(
    [(60, 60, 70), (205, 205, 212), (40, 50, 95), (112, 38, 50), (96, 110, 60), (40, 110, 112), (98, 78, 60)],
    np.float32,
)
_FRAMES = np.array([(12, 12, 12), (70, 30, 20), (120, 10, 20), (20, 30, 90)], np.float32)


def _check_resolution(resolution: int) -> None:
    r = int(resolution)
    if r != resolution or r < MIN_RESOLUTION or r > MAX_RESOLUTION or r & (r - 1):
        raise ValueError(
            f"resolution must be a power of two between {MIN_RESOLUTION} and {MAX_RESOLUTION}, got {resolution!r}"
        )


# -------------------------------------------------------------------------- attributes


def sample_attributes(rng: np.random.Generator) -> dict[str, int]:
    """Draw one attribute assignment (value indices into :data:`ATTRIBUTES`)."""
    u = rng.random(9)
    gender = int(u[0] < 0.5)
    man = gender == 0

    def pick(x: float, probs: Sequence[float]) -> int:
        return min(int(np.searchsorted(np.cumsum(probs), x, side="right")), len(probs) - 1)

    return {
        "gender": gender,
        "skin_tone": pick(u[1], (0.25, 0.25, 0.25, 0.25)),
        "hair_color": pick(u[2], (0.24, 0.24, 0.18, 0.14, 0.12, 0.08)),
        "hair_length": pick(u[3], (0.2, 0.6, 0.2) if man else (0.04, 0.3, 0.66)),
        "eye_color": pick(u[4], (1 / 3, 1 / 3, 1 / 3)),
        "glasses": int(u[5] < 0.3),
        "smile": int(u[6] < 0.5),
        "beard": int(man and u[7] < 0.4),  # women never have beards
        "background": pick(u[8], (1 / 6,) * 6),
    }


def attributes_to_vector(attrs: dict[str, int]) -> np.ndarray:
    """Attribute dict -> int64 vector in :data:`ATTRIBUTES` order."""
    return np.array([int(attrs[name]) for name in ATTRIBUTE_NAMES], dtype=np.int64)


def vector_to_attributes(vec: Sequence[int]) -> dict[str, int]:
    """Inverse of :func:`attributes_to_vector`."""
    return {name: int(v) for name, v in zip(ATTRIBUTE_NAMES, vec)}


def describe_attributes(attrs: dict[str, int]) -> dict[str, str]:
    """Attribute dict with value names instead of indices (for printing)."""
    return {name: ATTRIBUTES[name][int(v)] for name, v in attrs.items()}


# ---------------------------------------------------------------------------- rendering

_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    if resolution not in _GRIDS:
        c = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution - 0.5
        _GRIDS[resolution] = (c[None, :, None], c[:, None, None])
    return _GRIDS[resolution]


def _rgb(c: np.ndarray, alpha: int | None = None) -> tuple[int, ...]:
    t = tuple(min(255, max(0, int(v))) for v in c.tolist())
    return t if alpha is None else (*t, alpha)


def render_face(attrs: dict[str, int], rng: np.random.Generator, resolution: int) -> np.ndarray:
    """Draw one face for ``attrs``; returns a uint8 array of shape (resolution, resolution, 3).

    All randomness (jitter of pose, shape, colours and lighting) comes from ``rng``.
    """
    _check_resolution(resolution)
    u = rng.random(40)  # a fixed budget of uniforms keeps the stream layout stable
    n = rng.normal(0.0, 1.0, 12)

    S = SUPERSAMPLE * resolution  # output canvas size (before downsampling)
    m = S // 8  # margin of the drawing canvas, so rotations/shifts never show its edge
    W = S + 2 * m

    def X(v: float) -> float:
        return m + v * S

    def box(cx: float, cy: float, rx: float, ry: float) -> list[float]:
        return [X(cx - rx), X(cy - ry), X(cx + rx), X(cy + ry)]

    def lw(v: float) -> int:
        return max(1, round(v * S))

    man = attrs["gender"] == 0
    hair_len = attrs["hair_length"]
    bg = _BACKGROUND[attrs["background"]] + n[0:3] * 6
    skin = _SKIN[attrs["skin_tone"]] + n[3] * 6
    hair = _HAIR[attrs["hair_color"]] + n[4:7] * 5
    iris = _EYES[attrs["eye_color"]] + n[7:10] * 6
    shirt = _SHIRTS[int(u[0] * len(_SHIRTS))] + n[10] * 10
    dark_hair = hair * 0.78

    # face geometry (unit coordinates: the output image spans [0, 1] x [0, 1])
    cx, cy = 0.5, 0.47
    hrx = 0.205 * (0.9 + 0.2 * u[1]) * (0.93 if not man else 1.0)  # face width
    hry = 0.26 * (0.95 + 0.1 * u[2])
    eye_dx = hrx * (0.36 + 0.1 * u[3])  # eye spacing
    eye_y = cy - hry * (0.02 + 0.1 * u[4])
    erx, ery = hrx * (0.25 + 0.04 * u[5]), hry * (0.14 + 0.03 * u[6])
    mouth_y = cy + hry * (0.5 + 0.08 * u[7])
    mouth_w = hrx * (0.36 + 0.12 * u[8])

    img = Image.new("RGB", (W, W), _rgb(bg))
    d = ImageDraw.Draw(img, "RGBA")

    # shoulders / shirt
    srx = 0.36 + 0.08 * u[9]
    d.ellipse(box(cx, 1.07, srx, 0.27 + 0.03 * u[10]), fill=_rgb(shirt))

    # long hair falls behind the head, beside the face, down to the shoulders
    vol = 1.08 + 0.12 * u[11]  # hair volume
    if hair_len == 2:
        bottom = cy + hry * (1.05 + 0.55 * u[12])
        wrx = hrx * (1.25 + 0.2 * u[13])
        d.rounded_rectangle(
            [X(cx - wrx), X(cy - hry * vol), X(cx + wrx), X(bottom)], radius=wrx * S * 0.95, fill=_rgb(hair)
        )

    # neck
    d.rectangle([X(cx - hrx * 0.42), X(cy + hry * 0.4), X(cx + hrx * 0.42), X(0.95)], fill=_rgb(skin * 0.86))
    if hair_len == 2:  # some locks fall in front of the shoulders
        for side in (-1, 1):
            x0 = cx + side * hrx * (0.85 + 0.1 * u[14])
            d.ellipse(box(x0, cy + hry * 0.9, hrx * 0.28, hry * 0.55), fill=_rgb(hair))
    else:  # ears
        for side in (-1, 1):
            d.ellipse(box(cx + side * hrx * 0.97, eye_y + hry * 0.12, hrx * 0.17, hry * 0.21), fill=_rgb(skin * 0.9))

    # head
    d.ellipse(box(cx, cy, hrx, hry), fill=_rgb(skin))

    # beard: the lower face, with an opening around the mouth
    if attrs["beard"]:
        a = round(8 + 14 * u[15])  # integer angles: PIL's chord misdraws fractional ones
        d.chord(box(cx, cy + hry * 0.02, hrx * 1.03, hry * 1.06), start=a, end=180 - a, fill=_rgb(dark_hair))
        d.ellipse(box(cx, mouth_y, mouth_w * 1.15, hry * 0.16), fill=_rgb(skin * 0.95))

    # nose
    nose_y = cy + hry * (0.22 + 0.06 * u[16])
    d.ellipse(box(cx, nose_y, hrx * 0.09, hry * 0.08), fill=_rgb(skin * 0.76))

    # mouth: an open "D" smile with teeth, or a straight line
    if attrs["smile"]:
        mh = hry * (0.2 + 0.06 * u[17])
        d.chord(box(cx, mouth_y - mh * 0.35, mouth_w, mh), start=0, end=180, fill=(135, 22, 32))
        d.rectangle(
            [X(cx - mouth_w * 0.72), X(mouth_y - mh * 0.35), X(cx + mouth_w * 0.72), X(mouth_y - mh * 0.05)],
            fill=(250, 250, 250),
        )
    else:
        tilt = (u[17] - 0.5) * hry * 0.08
        d.line(
            [(X(cx - mouth_w * 0.8), X(mouth_y + tilt)), (X(cx + mouth_w * 0.8), X(mouth_y - tilt))],
            fill=(120, 36, 42),
            width=lw(0.022),
        )

    # eyes: white, iris, pupil, highlight
    for side in (-1, 1):
        ex = cx + side * eye_dx
        d.ellipse(box(ex, eye_y, erx, ery), fill=(250, 250, 250))
        ir = min(erx, ery) * 0.95
        d.ellipse(box(ex + (u[18] - 0.5) * erx * 0.3, eye_y, ir, ir), fill=_rgb(iris))
        d.ellipse(box(ex + (u[18] - 0.5) * erx * 0.3, eye_y, ir * 0.42, ir * 0.42), fill=(10, 10, 10))

    # eyebrows
    brow = dark_hair if hair_len else _HAIR[attrs["hair_color"]] * 0.6 + 20
    brow_y = eye_y - ery - hry * (0.1 + 0.06 * u[19])
    brow_tilt = (u[20] - 0.5) * hry * 0.12
    for side in (-1, 1):
        ex = cx + side * eye_dx
        d.line(
            [(X(ex - side * erx), X(brow_y + brow_tilt)), (X(ex + side * erx * 1.1), X(brow_y - brow_tilt))],
            fill=_rgb(brow),
            width=lw(0.024),
        )

    # hair on top of the head (short and long), with an asymmetric parting
    if hair_len:
        a0, a1 = round(18 + 20 * u[21]), round(18 + 20 * u[22])
        top = cy - hry * (0.06 + 0.06 * u[23])
        d.chord(box(cx, top, hrx * vol, hry * (0.98 + 0.08 * u[24])), start=180 + a0, end=360 - a1, fill=_rgb(hair))
        if hair_len == 1 and u[25] < 0.6:  # sideburns / side hair of short cuts
            for side in (-1, 1):
                x0 = cx + side * hrx * 0.93
                d.ellipse(box(x0, eye_y - hry * 0.25, hrx * 0.13, hry * 0.28), fill=_rgb(hair))
    else:  # bald: a highlight on the scalp
        d.ellipse(box(cx - hrx * 0.3, cy - hry * 0.72, hrx * 0.28, hry * 0.12), fill=(255, 255, 255, 70))

    # glasses: thick frames, tinted lenses, bridge and temples
    if attrs["glasses"]:
        frame = _rgb(_FRAMES[int(u[26] * len(_FRAMES))])
        grx, gry = erx * (1.45 + 0.2 * u[27]), ery * (1.9 + 0.3 * u[28])
        fw = lw(0.03)
        round_frames = u[29] < 0.5
        for side in (-1, 1):
            ex = cx + side * eye_dx
            b = box(ex, eye_y, grx, gry)
            if round_frames:
                d.ellipse(b, fill=(210, 235, 255, 70), outline=frame, width=fw)
            else:
                d.rounded_rectangle(b, radius=gry * S * 0.5, fill=(210, 235, 255, 70), outline=frame, width=fw)
            d.line([(X(ex + side * grx), X(eye_y - gry * 0.3)), (X(cx + side * hrx), X(eye_y - gry * 0.4))],
                   fill=frame, width=fw)
        d.line([(X(cx - eye_dx + grx), X(eye_y - gry * 0.2)), (X(cx + eye_dx - grx), X(eye_y - gry * 0.2))],
               fill=frame, width=fw)

    # pose jitter: rotation, scale, translation, as one affine resampling into the output canvas
    angle = math.radians((u[30] - 0.5) * 20)
    scale = 0.9 + 0.2 * u[31]
    tx, ty = (u[32] - 0.5) * 0.12 * S, (u[33] - 0.5) * 0.08 * S
    ca, sa = math.cos(angle) / scale, math.sin(angle) / scale
    ox, oy = 0.5 * S + tx, 0.5 * S + ty  # output point that the canvas centre maps to
    ix, iy = m + 0.5 * S, m + 0.5 * S
    coeffs = (ca, sa, ix - ca * ox - sa * oy, -sa, ca, iy + sa * ox - ca * oy)
    img = img.transform((S, S), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR,
                        fillcolor=_rgb(bg))
    img = img.reduce(SUPERSAMPLE)  # box filter: anti-aliased downsampling

    # lighting: brightness, contrast, colour cast and a soft linear gradient
    x = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    gx, gy = _grid(resolution)
    phi = 2 * math.pi * u[34]
    ramp = (0.22 * u[35]) * (gx * math.cos(phi) + gy * math.sin(phi))
    contrast = 0.85 + 0.3 * u[36]
    gain = 1.0 + (u[37:40] - 0.5) * 0.08
    x = (x - 0.5) * contrast + 0.5 + (u[38] - 0.5) * 0.14 + ramp
    x *= gain
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- captions

_MAN_NOUNS = ("man", "guy", "gentleman")
_WOMAN_NOUNS = ("woman", "lady")
_HAIR_COLOR_WORDS = {
    0: ("black",),
    1: ("brown", "chestnut"),
    2: ("blond", "blonde", "golden"),
    3: ("red", "ginger", "auburn"),
    4: ("grey", "gray", "silver"),
    5: ("white",),
}
_HAIR_LENGTH_WORDS = {1: ("short", "cropped"), 2: ("long", "flowing")}
_EYE_WORDS = {0: ("brown",), 1: ("blue",), 2: ("green",)}
_SKIN_WORDS = {0: ("pale", "fair"), 1: ("light",), 2: ("tan", "tanned", "olive"), 3: ("dark",)}
_BG_WORDS = {0: ("blue",), 1: ("green",), 2: ("yellow",), 3: ("pink",), 4: ("purple", "violet"), 5: ("orange",)}


def _pick(r: random.Random, options: Sequence[str]) -> str:
    return options[int(r.random() * len(options))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(items: list[str], rng: random.Random) -> str:
    if len(items) <= 1:
        return "".join(items)
    sep = ", and " if len(items) > 2 and rng.random() < 0.3 else " and "
    return ", ".join(items[:-1]) + sep + items[-1]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _realizations(
    attr: str, attrs: dict[str, int], mention: set[str], rng: random.Random, he: str, his: str
) -> dict[str, str]:
    """Ways to express one attribute (or the joint hair description), by slot:
    ``adj`` (before the noun), ``np`` (after "with"/"has"), ``sent`` (own sentence), ``set`` (setting)."""
    v = attrs.get(attr, -1)
    out: dict[str, str] = {}
    if attr == "hair":
        if attrs["hair_length"] == 0:
            out["adj"] = "bald"
            out["np"] = _pick(rng, ("a bald head", "a shaved head"))
            out["sent"] = f"{he} is bald."
            return out
        length = _pick(rng, _HAIR_LENGTH_WORDS[attrs["hair_length"]]) if "hair_length" in mention else None
        color = _pick(rng, _HAIR_COLOR_WORDS[attrs["hair_color"]]) if "hair_color" in mention else None
        words = [w for w in (length, color) if w]
        out["np"] = " ".join(words) + " hair"
        plain_length = ATTRIBUTES["hair_length"][attrs["hair_length"]]  # "flowing"/"cropped" read oddly as predicates
        if len(words) == 1:
            out["adj"] = f"{words[0]}-haired"
            out["sent"] = _pick(rng, (f"{his} hair is {color or plain_length}.", f"{he} has {out['np']}."))
        else:
            length = plain_length
            out["sent"] = _pick(
                rng, (f"{his} hair is {length} and {color}.", f"{his} hair is {color} and {length}.", f"{he} has {out['np']}.")
            )
        return out
    if attr == "eye_color":
        c = _pick(rng, _EYE_WORDS[v])
        return {"adj": f"{c}-eyed", "np": f"{c} eyes", "sent": _pick(rng, (f"{his} eyes are {c}.", f"{he} has {c} eyes."))}
    if attr == "skin_tone":
        t = _pick(rng, _SKIN_WORDS[v])
        return {"adj": f"{t}-skinned", "np": f"{t} skin", "sent": _pick(rng, (f"{he} has {t} skin.", f"{his} skin is {t}."))}
    if attr == "glasses":
        if v:
            return {
                "adj": "bespectacled",
                "np": _pick(rng, ("glasses", "eyeglasses", "spectacles")),
                "sent": _pick(rng, (f"{he} is wearing glasses.", f"{he} wears glasses.")),
            }
        return {
            "np": "no glasses",
            "sent": _pick(rng, (f"{he} is not wearing glasses.", f"{he} does not wear glasses.", f"{he} doesn't wear glasses.")),
        }
    if attr == "smile":
        if v:
            return {
                "adj": _pick(rng, ("smiling", "smiling", "happy", "cheerful", "grinning")),
                "np": _pick(rng, ("a smile", "a big smile", "a wide smile")),
                "sent": _pick(rng, (f"{he} is smiling.", f"{he} smiles.")),
            }
        return {
            "adj": _pick(rng, ("serious", "unsmiling", "serious-looking")),
            "np": _pick(rng, ("a neutral expression", "a serious expression")),
            "sent": _pick(rng, (f"{he} is not smiling.", f"{he} looks serious.")),
        }
    if attr == "beard":
        if v:
            return {
                "adj": "bearded",
                "np": _pick(rng, ("a beard", "a full beard", "a thick beard")),
                "sent": f"{he} has a beard.",
            }
        return {"adj": "clean-shaven", "np": "no beard", "sent": _pick(rng, (f"{he} is clean-shaven.", f"{he} has no beard."))}
    if attr == "background":
        c = _pick(rng, _BG_WORDS[v])
        return {
            "set": _pick(rng, (f"on {_article(c)} {c} background", f"against {_article(c)} {c} background",
                               f"in front of {_article(c)} {c} background")),
            "sent": _pick(rng, (f"the background is {c}.", f"the backdrop is {c}.")),
        }
    raise KeyError(attr)


def make_caption(attrs: dict[str, int], rng: np.random.Generator | random.Random) -> str:
    """One caption mentioning gender and at least two more attributes, all true to ``attrs``."""
    if isinstance(rng, np.random.Generator):
        rng = random.Random(int(rng.integers(2**63)))
    man = attrs["gender"] == 0
    he, his = ("he", "his") if man else ("she", "her")
    noun = _pick(rng, _MAN_NOUNS if man else _WOMAN_NOUNS)

    avail = ["skin_tone", "hair_length", "eye_color", "glasses", "smile", "background"]
    if attrs["hair_length"] != 0:
        avail.append("hair_color")  # never a hair colour for bald people
    if man:
        avail.append("beard")
    n = rng.randint(2, min(5, len(avail)))
    mention = set(rng.sample(avail, n))

    units = [a for a in ("smile", "hair", "eye_color", "skin_tone", "glasses", "beard", "background")
             if a in mention or (a == "hair" and mention & {"hair_length", "hair_color"})]
    rng.shuffle(units)  # random mention order

    style = _pick(rng, ("with", "with", "has", "portrait", "sentences"))
    adjs: list[str] = []
    nps: list[str] = []
    sents: list[str] = []
    setting = ""
    for unit in units:
        forms = _realizations(unit, attrs, mention, rng, he, his)
        slots = [s for s in ("adj", "np", "sent", "set") if s in forms]
        if len(adjs) >= 2 and "adj" in slots:
            slots.remove("adj")
        if style == "sentences" and "np" in slots:
            slots.remove("np")
        if style == "has" and "set" in slots:
            slots.remove("set")
        weights = [3.0 if s in ("np", "set") or (s == "sent" and style == "sentences") else 1.0 for s in slots]
        slot = rng.choices(slots, weights)[0]
        if slot == "adj":
            adjs.append(forms["adj"])
        elif slot == "np":
            nps.append(forms["np"])
        elif slot == "sent":
            sents.append(forms["sent"])
        else:
            setting = " " + forms["set"]

    if style == "has" and not nps:
        style = "with"
    head = " ".join([*adjs, noun])
    if style == "has":
        first = f"{_pick(rng, ('this', 'the'))} {head} has {_join(nps, rng)}."
    else:
        leads = ("portrait of", "a photo of", "a picture of", "a drawing of", "a close-up of")
        lead = _pick(rng, leads) + " " if style == "portrait" or (style == "sentences" and rng.random() < 0.5) else ""
        first = f"{lead}{_article(head)} {head}"
        if nps:
            first += f" with {_join(nps, rng)}"
        first += setting + "."
    return " ".join(_cap(s) for s in [first, *sents])


def make_captions(attrs: dict[str, int], rng: np.random.Generator, k: int) -> list[str]:
    """``k`` varied captions for one image (see :func:`make_caption`)."""
    r = random.Random(int(rng.integers(2**63)))
    return [make_caption(attrs, r) for _ in range(k)]


# ------------------------------------------------------------------------------ parsing

def _inverse(table: dict[int, tuple[str, ...]]) -> dict[str, int]:
    return {w: v for v, words in table.items() for w in words}


_P_HAIR_COLOR = _inverse(_HAIR_COLOR_WORDS)
_P_HAIR_LENGTH = _inverse(_HAIR_LENGTH_WORDS)
_P_EYES = _inverse(_EYE_WORDS)
_P_SKIN = _inverse(_SKIN_WORDS)
_P_BG = _inverse(_BG_WORDS)
_P_MAN = {"man", "men", "guy", "gentleman", "male", "boy", "he", "his", "him"}
_P_WOMAN = {"woman", "women", "lady", "female", "girl", "she", "her", "hers"}
_P_GLASSES = {"glasses", "eyeglasses", "spectacles"}
# Nouns whose colour or tone word stands before them or after "is/are": attribute and value table.
_P_NOUNS = {
    **dict.fromkeys(("eyes", "eyed", "eye"), ("eye_color", _P_EYES)),
    **dict.fromkeys(("skin", "skinned", "complexion"), ("skin_tone", _P_SKIN)),
    **dict.fromkeys(("background", "backdrop"), ("background", _P_BG)),
}
_P_SMILE_YES = {"smiling", "smile", "smiles", "smiled", "grinning", "grin", "grins", "happy", "cheerful"}
_P_SMILE_NO = {"serious", "unsmiling", "neutral", "frowning", "sad"}
_P_NEGATION = {"no", "not", "without", "never", "nor", "doesn't", "don't", "isn't", "aren't"}
_P_SKIPPABLE = {"a", "an", "any", "wearing", "wear", "wears", "big", "wide", "full", "thick", "have", "has"}
_P_TOKEN_RE = re.compile(r"[a-z0-9']+|[.,;:!?]")


def _negated(tokens: list[str], j: int) -> bool:
    k = j - 1
    while k >= 0 and tokens[k] in _P_SKIPPABLE:
        k -= 1
    return k >= 0 and tokens[k] in _P_NEGATION


def parse_caption(text: str) -> dict[str, int]:
    """Recover the attribute values a caption mentions (value indices into :data:`ATTRIBUTES`).

    Understands the phrasing :func:`make_caption` produces and simple free text such as
    "a smiling woman with red hair". Attributes that are not mentioned are absent; where a
    caption mentions an attribute twice the first mention wins.
    """
    t = _P_TOKEN_RE.findall(text.lower().replace("-", " "))
    found: dict[str, int] = {}

    def put(name: str, value: int) -> None:
        found.setdefault(name, value)

    def before(j: int, table: dict[str, int]) -> int | None:
        return table.get(t[j - 1]) if j > 0 else None

    def after_is(j: int, tables: Sequence[dict[str, int]]) -> list[tuple[int, int]]:
        """Values in "<noun> is/are X (and Y)" as (table index, value) pairs."""
        out: list[tuple[int, int]] = []
        if j + 1 < len(t) and t[j + 1] in ("is", "are", "was", "were"):
            k = j + 2
            while k < len(t):
                hit = next(((ti, tab[t[k]]) for ti, tab in enumerate(tables) if t[k] in tab), None)
                if hit is not None:
                    out.append(hit)
                elif t[k] != "and":
                    break
                k += 1
        return out

    for j, w in enumerate(t):
        if w in _P_MAN:
            put("gender", 0)
        elif w in _P_WOMAN:
            put("gender", 1)
        elif w in ("hair", "haired"):
            if j > 0 and t[j - 1] == "no":
                put("hair_length", 0)
                continue
            k = j - 1
            while k >= 0 and (t[k] in _P_HAIR_COLOR or t[k] in _P_HAIR_LENGTH):
                if t[k] in _P_HAIR_COLOR:
                    put("hair_color", _P_HAIR_COLOR[t[k]])
                else:
                    put("hair_length", _P_HAIR_LENGTH[t[k]])
                k -= 1
            for ti, v in after_is(j, (_P_HAIR_COLOR, _P_HAIR_LENGTH)):
                put(("hair_color", "hair_length")[ti], v)
        elif w == "bald" or (w in ("shaved", "shaven") and j + 1 < len(t) and t[j + 1] == "head"):
            put("hair_length", 0)
        elif w in _P_NOUNS:  # "green eyes", "eyes are green", "a pink backdrop", ...
            name, table = _P_NOUNS[w]
            v = before(j, table)
            if v is not None:
                put(name, v)
            for _, v in after_is(j, (table,)):
                put(name, v)
        elif w in _P_GLASSES:
            put("glasses", 0 if _negated(t, j) else 1)
        elif w == "bespectacled":
            put("glasses", 1)
        elif w in ("beard", "bearded"):
            put("beard", 0 if _negated(t, j) else 1)
        elif w == "beardless" or (w == "clean" and j + 1 < len(t) and t[j + 1] in ("shaven", "shaved")):
            put("beard", 0)
        elif w in _P_SMILE_YES:
            put("smile", 0 if _negated(t, j) else 1)
        elif w in _P_SMILE_NO:
            put("smile", 0)
    return found


# ------------------------------------------------------------------------------ dataset

def render_sample(seed: int, index: int, resolution: int, captions_per_image: int):
    """Attributes, image and captions of sample ``index``; depends only on (seed, index)."""
    rng = np.random.default_rng([seed, index])
    attrs = sample_attributes(rng)
    image = render_face(attrs, rng, resolution)
    captions = make_captions(attrs, rng, captions_per_image)
    return attrs, image, captions


def _render_range(args: tuple[int, int, int, int, int]):
    seed, start, stop, resolution, k = args
    images = np.empty((stop - start, resolution, resolution, 3), np.uint8)
    attributes = np.empty((stop - start, len(ATTRIBUTE_NAMES)), np.int64)
    captions: list[list[str]] = []
    for j, i in enumerate(range(start, stop)):
        attrs, images[j], caps = render_sample(seed, i, resolution, k)
        attributes[j] = attributes_to_vector(attrs)
        captions.append(caps)
    return start, images, attributes, captions


def default_cache_dir() -> Path:
    """``$T2F_CACHE_DIR/synthetic`` if the variable is set, else ``~/.cache/t2f/synthetic``."""
    root = os.environ.get("T2F_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "t2f") / "synthetic"


def cache_file_name(size: int, resolution: int, seed: int, captions_per_image: int) -> str:
    return f"faces_n{size}_r{resolution}_s{seed}_c{captions_per_image}_v{RENDER_VERSION}.npz"


PARALLEL_THRESHOLD = 2048  # sets at least this large render in a process pool


def render_dataset(
    size: int, resolution: int, seed: int, captions_per_image: int, processes: int | None = None, verbose: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a whole set: uint8 images (N, H, W, 3), int64 attributes (N, A), captions (N, K) str array."""
    _check_resolution(resolution)
    if processes is None:
        processes = os.cpu_count() or 1
    processes = max(1, min(processes, os.cpu_count() or 1))
    images = np.empty((size, resolution, resolution, 3), np.uint8)
    attributes = np.empty((size, len(ATTRIBUTE_NAMES)), np.int64)
    captions: list[list[str]] = [[] for _ in range(size)]
    chunk = 256
    jobs = [(seed, s, min(s + chunk, size), resolution, captions_per_image) for s in range(0, size, chunk)]
    show = verbose and size >= PARALLEL_THRESHOLD
    t0 = time.perf_counter()
    if show:
        print(f"[t2f] rendering {size} synthetic faces at {resolution}x{resolution} (seed {seed}, "
              f"{processes} process{'es' if processes > 1 else ''}) ...", file=sys.stderr, flush=True)

    def collect(results) -> None:
        done, next_report = 0, 0.1
        for start, im, at, caps in results:
            images[start : start + len(im)] = im
            attributes[start : start + len(im)] = at
            captions[start : start + len(im)] = caps
            done += len(im)
            if show and done / size >= next_report:
                rate = done / max(time.perf_counter() - t0, 1e-9)
                print(f"[t2f]   {done}/{size} ({rate:.0f} images/s)", file=sys.stderr, flush=True)
                next_report += 0.1

    if processes > 1 and size >= PARALLEL_THRESHOLD:
        with multiprocessing.get_context().Pool(processes) as pool:
            collect(pool.imap_unordered(_render_range, jobs))
    else:
        collect(map(_render_range, jobs))
    if show:
        print(f"[t2f] rendered {size} faces in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    return images, attributes, np.array(captions, dtype=str).reshape(size, captions_per_image)


def _save_atomic(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SyntheticFaces(Dataset):
    """Procedurally drawn faces with attributes and captions, rendered once and cached.

    Items are dicts: ``image`` float32 (3, H, W) in [-1, 1]; ``caption`` int64 token ids
    (``[BOS] ... [EOS]``) of one of the image's captions, drawn with torch's RNG;
    ``caption_index`` which one; ``attributes`` int64 (A,) in :data:`ATTRIBUTES` order.
    """

    def __init__(
        self,
        size: int = 20000,
        resolution: int = 32,
        seed: int = 0,
        captions_per_image: int = 5,
        cache_dir: str | os.PathLike | None = None,
        vocab: Vocabulary | None = None,
    ):
        super().__init__()
        _check_resolution(resolution)
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image must be positive, got {captions_per_image}")
        self.size, self.resolution, self.seed = int(size), int(resolution), int(seed)
        self.captions_per_image = int(captions_per_image)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.cache_path = self.cache_dir / cache_file_name(size, resolution, seed, captions_per_image)

        arrays = self._load_cache()
        if arrays is None:
            check_writable_dir(self.cache_dir, "set T2F_CACHE_DIR to a writable folder (or dataset.root=DIR)")
            images, attributes, captions = render_dataset(size, resolution, seed, captions_per_image)
            _save_atomic(self.cache_path, images=images, attributes=attributes, captions=captions)
        else:
            images, attributes, captions = arrays
        self.images: np.ndarray = images
        self.attributes: np.ndarray = attributes
        self.captions: list[list[str]] = captions.tolist()
        self.attribute_names: tuple[str, ...] = ATTRIBUTE_NAMES
        self.vocab: Vocabulary = vocab if vocab is not None else Vocabulary.build(c for cs in self.captions for c in cs)

    def _load_cache(self):
        if not self.cache_path.is_file():
            return None
        try:
            with np.load(self.cache_path, allow_pickle=False) as z:
                images, attributes, captions = z["images"], z["attributes"], z["captions"]
        except (OSError, ValueError, KeyError, EOFError) as e:  # corrupt or foreign file: render again
            print(f"[t2f] ignoring unreadable cache {self.cache_path}: {e}", file=sys.stderr)
            return None
        expected = (self.size, self.resolution, self.resolution, 3)
        if images.shape != expected or captions.shape != (self.size, self.captions_per_image):
            return None
        return images, attributes, captions

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        j = int(torch.randint(self.captions_per_image, ()).item())
        caption = torch.tensor(self.vocab.encode(self.captions[index][j]), dtype=torch.long)
        return {
            "image": image,
            "caption": caption,
            "caption_index": j,
            "attributes": torch.from_numpy(self.attributes[index].copy()),
        }


def synthetic_attribute_task() -> AttributeTask:
    """The 9 drawn attributes, read from captions by :func:`parse_caption`."""
    return AttributeTask("synthetic", tuple(ATTRIBUTES), tuple(len(v) for v in ATTRIBUTES.values()), parse_caption)


class SyntheticDataModule(FaceDataModule):
    """``dataset=synthetic``: the built-in faces; the last ``val_size`` faces are held out."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        size: int = 20000,
        val_size: int = 1000,
        captions_per_image: int = 5,
        seed: int = 0,
        **loader: Any,
    ) -> None:
        super().__init__(max_resolution=128, **loader)
        if size < 1:
            raise ValueError(f"dataset.size={size} must be >= 1: the number of training faces")
        if val_size < 0:
            raise ValueError(f"dataset.val_size={val_size} must be >= 0: the number of held-out faces")
        self.root = root
        self.size, self.val_size = int(size), int(val_size)
        self.captions_per_image = int(captions_per_image)
        self.seed = int(seed)
        self.faces: SyntheticFaces | None = None

    def build(self) -> None:
        self.faces = SyntheticFaces(
            size=self.size + self.val_size, resolution=self.resolution, seed=self.seed,
            captions_per_image=self.captions_per_image, cache_dir=self.root,
        )
        self.vocab = self.faces.vocab
        self.train_set = Subset(self.faces, range(self.size))
        self.val_set = Subset(self.faces, range(self.size, self.size + self.val_size))

    def attribute_task(self) -> AttributeTask:
        return synthetic_attribute_task()

    def sample_captions(self, n: int, seed: int = 0) -> list[str]:
        self.setup()
        rng = np.random.default_rng(seed)
        pool = range(self.size, self.size + self.val_size) if self.val_size else range(self.size)
        picks = rng.choice(len(pool), size=n, replace=n > len(pool))
        return [self.faces.captions[pool[i]][0] for i in picks]
