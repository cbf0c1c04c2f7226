"""Captions generated from a face's attributes, and the parser that reads attributes back from text."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import numpy as np

from t2f.data.synthetic.attributes import ATTRIBUTES

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
