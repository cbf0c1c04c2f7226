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
prediction heads say which words a caption contains (bag of words): from the caption
embedding, so that it keeps every word; and from the critic's image embedding, so that the
critic learns to see what each word describes on real faces and the generator, scored by the
same head, must draw it.
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
    text_words_weight: float = 0.0
    image_words_weight: float = 0.0
    text_words: nn.Module | None  # set by init_word_prediction
    image_words: nn.Module | None

    def init_mismatch(self, mismatch: str) -> None:
        """``model.mismatch``: which other caption a real face is paired with as a fake pair."""
        if mismatch not in MISMATCH_MODES:
            raise ValueError(f"model.mismatch={mismatch!r}: choose one of {', '.join(MISMATCH_MODES)}")
        self.mismatch = mismatch

    def init_contrastive(self, settings: dict[str, float] | None) -> None:
        """Read ``model.contrastive`` (weight, temperature)."""
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

    def init_word_prediction(self, settings: dict[str, float] | None) -> None:
        """Read ``model.word_prediction`` (text, image): linear heads that predict which words a
        caption holds, from its embedding (``text``, trained with the text encoder) and from the
        critic's image embedding of its face (``image``: trained on real faces with the critic,
        and scoring the generator's fakes). 0 builds no head."""
        settings = {"text": 0.0, "image": 0.0, **(settings or {})}
        unknown = set(settings) - {"text", "image"}
        if unknown:
            raise ValueError(f"model.word_prediction has unknown keys {sorted(unknown)}: use text, image")
        for key, weight in settings.items():
            if not float(weight) >= 0:
                raise ValueError(f"model.word_prediction.{key}={weight} must be >= 0 (0 turns it off)")
        on = self.text_encoder is not None
        self.text_words_weight = float(settings["text"]) if on else 0.0
        self.image_words_weight = float(settings["image"]) if on else 0.0
        self.text_words = self.image_words = None  # a class default would hide the modules
        if on:
            dim, words = self.text_encoder.output_dim, self.text_encoder.vocab_size - len(SPECIAL_TOKENS)
            if self.text_words_weight > 0:
                self.text_words = nn.Linear(dim, words)
            if self.image_words_weight > 0:
                self.image_words = nn.Linear(dim, words)

    @property
    def image_embedding_dim(self) -> int:
        """The critic's image embedding size: the caption embedding's, or 0 when no term reads it."""
        needed = self.contrastive_weight > 0 or self.image_words_weight > 0
        return self.text_encoder.output_dim if needed else 0

    def discriminator_parameters(self) -> Iterator[nn.Parameter] | list[dict[str, Any]]:
        if self.text_encoder is None:
            return self.discriminator.parameters()
        critic, text = list(self.discriminator.parameters()), list(self.text_encoder.parameters())
        if self.image_words is not None:
            critic += list(self.image_words.parameters())
        if self.text_words is not None:
            text += list(self.text_words.parameters())
        return [{"params": critic}, {"params": text, "lr_scale": self.text_encoder_lr_scale}]

    def conditions(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.text_encoder is None:
            return {}
        tokens = batch["caption"]
        return {"text_embedding": self.text_encoder(tokens, batch["caption_length"]), "caption": tokens,
                "same_caption": (tokens[:, None, :] == tokens[None, :, :]).all(dim=2)}

    def image_terms(self, image_embedding: Tensor, conditions: dict[str, Any]) -> dict[str, Tensor]:
        """The terms read from the critic's image embedding, the same for real faces (critic
        step) and fakes (generator step): the contrastive term and the image's word prediction."""
        terms = {}
        if self.contrastive_weight > 0:
            terms["contrastive"] = self.contrastive_weight * contrastive_loss(
                image_embedding, conditions["text_embedding"], self.contrastive_temperature,
                conditions.get("same_caption"))
        if self.image_words is not None:
            terms["image_words"] = self.image_words_weight * word_prediction_loss(
                self.image_words(image_embedding), conditions["caption"], len(SPECIAL_TOKENS))
        return terms

    def extra_d_terms(self, real_features: Tensor, conditions: dict[str, Any]) -> dict[str, Tensor]:
        terms = super().extra_d_terms(real_features, conditions)
        if self.image_embedding_dim:
            terms.update(self.image_terms(self.discriminator.embed(real_features), conditions))
        if self.text_words is not None:
            terms["text_words"] = self.text_words_weight * word_prediction_loss(
                self.text_words(conditions["text_embedding"]), conditions["caption"], len(SPECIAL_TOKENS))
        return terms

    def generator_terms(self, fake: Tensor, conditions: dict[str, Any]) -> dict[str, Tensor]:
        if not self.image_embedding_dim:
            return super().generator_terms(fake, conditions)
        features = self.critic_trunk(fake)
        scores = self.critic_head(features, self.critic_condition(conditions))
        return {"adv": self.adversarial.g_loss(scores),
                **self.image_terms(self.discriminator.embed(features), conditions)}

    def critic_condition(self, conditions: dict[str, Any]) -> Tensor | None:
        return conditions.get("text_embedding")

    def critic_trunk(self, images: Tensor) -> Tensor:
        return self.discriminator.features(images, self.stage, self.alpha)

    def critic_head(self, features: Tensor, condition: Tensor | None) -> Tensor:
        return self.discriminator.head(features, condition)

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
