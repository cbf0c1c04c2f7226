"""What a captioned dataset's attributes are and how a caption mentions them.

Datamodules that have attributes (``attribute_task()``) return one; the alignment and diversity
metrics read it, so no metric needs to know the dataset's class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class AttributeTask:
    """Attributes of a dataset and how to read them from a caption.

    ``parse(text)`` returns ``{attribute name: value index}`` for the attributes the caption
    mentions. Real items' ``attributes`` vectors are value indices in ``names`` order.
    """

    name: str
    names: tuple[str, ...]
    num_classes: tuple[int, ...]
    parse: Callable[[str], dict[str, int]]

    @property
    def id(self) -> str:
        return f"{self.name}{len(self.names)}"

    def targets(self, captions: Sequence[str]) -> Tensor:
        """(N, A) int64 value indices of the mentioned attributes, -1 where not mentioned."""
        out = torch.full((len(captions), len(self.names)), -1, dtype=torch.long)
        index = {n: i for i, n in enumerate(self.names)}
        for row, text in enumerate(captions):
            for name, value in self.parse(text).items():
                if name in index:
                    out[row, index[name]] = int(value)
        return out
