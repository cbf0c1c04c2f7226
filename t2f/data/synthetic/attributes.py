"""The synthetic faces' attributes: their values, how they are drawn at random, and vectors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
