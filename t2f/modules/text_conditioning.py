"""Text conditioning shared by T2F and conditional StyleGAN.

The caption embedding conditions the generator and the critic. The text encoder is trained
with the critic by the matching-aware loss: a real face with another sample's caption
counts as fake, which rewards embeddings that tell captions apart by what they say about a
face; the generator reads the embedding without being able to move it.

That signal alone lets the encoder settle on whatever the critic learns first (the
background colour) and forget the rest. The optional contrastive term (XMC-GAN's sentence
term, CLIP's loss) asks each real face to pick out its own caption among the batch's, in
an image embedding the critic reads from its 4x4 features: the encoder must then keep
every attribute that tells faces apart, and the generator, scored the same way on its
fakes, must draw them.

Within a batch the colours alone tell most captions apart, so the contrastive term still
lets the encoder drop the small things (glasses, eye colour, a smile). The optional word
prediction term asks the caption embedding to say which words its caption contains (a
bag-of-words head): the embedding keeps every word, and the contrastive term then asks the
critic's image embedding for the features those words describe.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from t2f.data.vocab import SPECIAL_TOKENS, Vocabulary
from t2f.losses import contrastive_loss, word_prediction_loss

MISMATCH_MODES = ("shifted", "nearest")


class TextConditionedMixin:
    """Mix into a progressive GANModule before it. ``text_encoder`` None = unconditional."""

    text_encoder: nn.Module | None
    discriminator: nn.Module
    stage: int
    alpha: float

    text_encoder_lr_scale: float = 1.0
    mismatch: str = "shifted"
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.1
    word_prediction_weight: float = 0.0
    word_predictor: nn.Module | None  # set by init_word_prediction (a class default would hide the module)

    def init_mismatch(self, mismatch: str) -> None:
        """``model.mismatch``: which other caption a real face is paired with as a fake pair."""
        if mismatch not in MISMATCH_MODES:
            raise ValueError(f"model.mismatch={mismatch!r}: choose one of {', '.join(MISMATCH_MODES)}")
        self.mismatch = mismatch

    def init_contrastive(self, settings: dict[str, float] | None) -> int:
        """Read ``model.contrastive`` (weight, temperature); returns the critic's image
        embedding size: the caption embedding's, or 0 when the term is off."""
        settings = {"weight": 0.0, "temperature": 0.1, **(settings or {})}
        unknown = set(settings) - {"weight", "temperature"}
        if unknown:
            raise ValueError(f"model.contrastive has unknown keys {sorted(unknown)}: use weight, temperature")
        weight, temperature = float(settings["weight"]), float(settings["temperature"])
        if weight < 0:
            raise ValueError(f"model.contrastive.weight={weight} must be >= 0 (0 turns it off)")
        if not temperature > 0:
            raise ValueError(f"model.contrastive.temperature={temperature} must be > 0")
        self.contrastive_weight = weight if self.text_encoder is not None else 0.0
        self.contrastive_temperature = temperature
        return self.text_encoder.output_dim if self.contrastive_weight > 0 else 0

    def init_word_prediction(self, weight: float) -> None:
        """``model.word_prediction_weight``: a linear head on the caption embedding predicts the
        caption's words; trained with the text encoder by the critic's optimizer (0: no head)."""
        if not weight >= 0:
            raise ValueError(f"model.word_prediction_weight={weight} must be >= 0 (0 turns it off)")
        self.word_prediction_weight = float(weight) if self.text_encoder is not None else 0.0
        self.word_predictor = None
        if self.word_prediction_weight > 0:
            words = self.text_encoder.vocab_size - len(SPECIAL_TOKENS)
            self.word_predictor = nn.Linear(self.text_encoder.output_dim, words)

    def discriminator_parameters(self) -> Iterator[nn.Parameter] | list[dict[str, Any]]:
        if self.text_encoder is None:
            return self.discriminator.parameters()
        text = list(self.text_encoder.parameters())
        if self.word_predictor is not None:
            text += list(self.word_predictor.parameters())
        return [{"params": list(self.discriminator.parameters())},
                {"params": text, "lr_scale": self.text_encoder_lr_scale}]

    def conditions(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.text_encoder is None:
            return {}
        tokens = batch["caption"]
        return {"text_embedding": self.text_encoder(tokens, batch["caption_length"]), "caption": tokens,
                "same_caption": (tokens[:, None, :] == tokens[None, :, :]).all(dim=2)}

    def contrastive(self, image_embedding: Tensor, conditions: dict[str, Any]) -> Tensor:
        loss = contrastive_loss(image_embedding, conditions["text_embedding"],
                                self.contrastive_temperature, conditions.get("same_caption"))
        return self.contrastive_weight * loss

    def extra_d_terms(self, real: Tensor, conditions: dict[str, Any]) -> dict[str, Tensor]:
        terms = super().extra_d_terms(real, conditions)
        if self.contrastive_weight > 0:
            embedding = self.discriminator.image_embedding(real, self.stage, self.alpha)
            terms["contrastive"] = self.contrastive(embedding, conditions)
        if self.word_predictor is not None:
            logits = self.word_predictor(conditions["text_embedding"])
            terms["words"] = self.word_prediction_weight * word_prediction_loss(
                logits, conditions["caption"], len(SPECIAL_TOKENS))
        return terms

    def generator_terms(self, fake: Tensor, conditions: dict[str, Any]) -> dict[str, Tensor]:
        if self.contrastive_weight == 0:
            return super().generator_terms(fake, conditions)
        scores, embedding = self.discriminator(fake, self.stage, self.alpha,
                                               condition=self.critic_condition(conditions), embed=True)
        return {"adv": self.adversarial.g_loss(scores), "contrastive": self.contrastive(embedding, conditions)}

    def critic_condition(self, conditions: dict[str, Any]) -> Tensor | None:
        return conditions.get("text_embedding")

    def critic(self, images: Tensor, condition: Tensor | None) -> Tensor:
        return self.discriminator(images, self.stage, self.alpha, condition=condition)

    def mismatched_condition(self, conditions: dict[str, Any]) -> Tensor | None:
        """Each real face paired with another sample's caption, a pair that counts as fake:
        the next sample's (``shifted``) or the one whose embedding is closest (``nearest``,
        a hard negative: captions that share the colours and differ in smaller things)."""
        condition = self.critic_condition(conditions)
        if condition is None:
            return None
        if self.mismatch == "shifted":
            return condition.roll(1, dims=0)
        unit = F.normalize(condition.detach(), dim=1)
        # itself and repeats of its sentence are not mismatches
        similarity = (unit @ unit.t()).masked_fill(conditions["same_caption"], float("-inf"))
        return condition[similarity.argmax(dim=1)]

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
        padded, lengths = vocab.encode_batch(captions, warn_unknown=True)
        return {"caption": padded.to(self.device), "caption_length": lengths}
