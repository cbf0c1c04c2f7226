"""Text conditioning shared by T2F and conditional StyleGAN.

The caption embedding conditions the generator and the critic. The text encoder is trained
with the critic by the matching-aware loss: a real face with another sample's caption
counts as fake, which rewards embeddings that tell captions apart by what they say about a
face; the generator reads the embedding without being able to move it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from t2f.data.base import pad_captions
from t2f.data.vocab import Vocabulary


class TextConditionedMixin:
    """Mix into a progressive GANModule before it. ``text_encoder`` None = unconditional."""

    text_encoder: nn.Module | None
    discriminator: nn.Module
    stage: int
    alpha: float

    text_encoder_lr_scale: float = 1.0

    def discriminator_parameters(self) -> Iterator[nn.Parameter] | list[dict[str, Any]]:
        if self.text_encoder is None:
            return self.discriminator.parameters()
        return [{"params": list(self.discriminator.parameters())},
                {"params": list(self.text_encoder.parameters()), "lr_scale": self.text_encoder_lr_scale}]

    def conditions(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.text_encoder is None:
            return {}
        return {"text_embedding": self.text_encoder(batch["caption"], batch["caption_length"])}

    def critic_condition(self, conditions: dict[str, Any]) -> Tensor | None:
        return conditions.get("text_embedding")

    def critic(self, images: Tensor, condition: Tensor | None) -> Tensor:
        return self.discriminator(images, self.stage, self.alpha, condition=condition)

    def mismatched_condition(self, condition: Tensor | None) -> Tensor | None:
        """Each real face paired with the next sample's caption: counts as fake."""
        return None if condition is None else condition.roll(1, dims=0)

    def text_embedding(self, inputs: dict[str, Any]) -> Tensor | None:
        """The embedding in generator inputs, or computed from their token ids (grids, generate)."""
        if self.text_encoder is None:
            return None
        embedding = inputs.get("text_embedding")
        if embedding is None:
            embedding = self.text_encoder(inputs["caption"], inputs["caption_length"])
        return embedding

    def encode_captions(self, captions: list[str], vocab: Vocabulary) -> dict[str, Tensor]:
        """Token ids and lengths for captions (unknown words map to <unk> with a warning)."""
        ids = [torch.tensor(vocab.encode(c, warn_unknown=True)) for c in captions]
        padded, lengths = pad_captions(ids)
        return {"caption": padded.to(self.device), "caption_length": lengths}
