"""Word-level caption vocabulary.

Token ids 0..3 are reserved for the special tokens; real words follow in a
deterministic order (descending frequency, then alphabetical), so building the
vocabulary twice from the same captions always gives the same ids. The state is
plain python (a list of strings) so it can be stored inside Lightning checkpoints.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence

import torch

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")

_WORD_RE = re.compile(r"[a-z0-9']+")


def pad_captions(captions: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id sequences -> (B, longest) PAD-filled ids and (B,) lengths."""
    lengths = torch.tensor([len(c) for c in captions], dtype=torch.long)
    padded = torch.full((len(captions), int(lengths.max())), PAD, dtype=torch.long)
    for row, caption in enumerate(captions):
        padded[row, : len(caption)] = caption
    return padded, lengths


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and split it into words; punctuation is dropped."""
    return _WORD_RE.findall(text.lower())


class Vocabulary:
    """Maps words to integer ids and back.

    Args:
        tokens: the words after the four special tokens, in id order
            (``tokens[0]`` gets id 4).
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = [str(t) for t in tokens]
        clash = set(tokens) & set(SPECIAL_TOKENS)
        if clash:
            raise ValueError(f"tokens must not contain special tokens: {sorted(clash)}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("tokens must be unique")
        self.itos: list[str] = list(SPECIAL_TOKENS) + tokens
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1) -> Vocabulary:
        """Build from raw texts, keeping words seen at least ``min_freq`` times."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(tokenize(text))
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if not words:  # every caption would be <unk> ... <unk>: text conditioning would learn nothing
            raise ValueError(
                f"dataset.min_freq={min_freq} keeps no word: the most frequent training caption word appears "
                f"{max(counts.values())} time(s); lower dataset.min_freq" if counts else
                "the training captions hold no words")
        return cls(words)

    @property
    def tokens(self) -> list[str]:
        """The non-special words, in id order."""
        return self.itos[len(SPECIAL_TOKENS) :]

    def encode(self, text: str, warn_unknown: bool = False) -> list[int]:
        """``[BOS] + word ids + [EOS]``; unknown words map to ``UNK``."""
        words = tokenize(text)
        if not words:
            raise ValueError(
                f"cannot encode caption {text!r}: it contains no words (empty, whitespace or punctuation only)"
            )
        ids = [self.stoi.get(w, UNK) for w in words]
        if warn_unknown:
            unknown = sorted({w for w, i in zip(words, ids) if i == UNK})
            if unknown:
                warnings.warn(
                    f"caption {text!r} contains words not in the vocabulary (mapped to <unk>): {', '.join(unknown)}",
                    stacklevel=2,
                )
        return [BOS, *ids, EOS]

    def encode_batch(self, texts: Sequence[str], warn_unknown: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids ``(B, longest)`` and lengths ``(B,)`` for captions typed by a user or a
        grid; a caption repeated in ``texts`` is encoded (and warned about) once."""
        ids = {t: torch.tensor(self.encode(t, warn_unknown=warn_unknown)) for t in dict.fromkeys(texts)}
        return pad_captions([ids[t] for t in texts])

    def decode(self, ids: Iterable[int]) -> str:
        """Join the words for ``ids``, dropping special tokens (incl. padding)."""
        n_special = len(SPECIAL_TOKENS)
        out = []
        for i in ids:
            i = int(i)
            if i < n_special:
                continue
            if i >= len(self.itos):
                raise IndexError(f"token id {i} out of range for vocabulary of size {len(self)}")
            out.append(self.itos[i])
        return " ".join(out)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: object) -> bool:
        return word in self.stoi

    def state_dict(self) -> dict:
        return {"tokens": list(self.tokens)}

    @classmethod
    def from_state_dict(cls, d: dict) -> Vocabulary:
        return cls(list(d["tokens"]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.itos == other.itos

    __hash__ = None  # mutable-ish container semantics; equality is by content

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"
