"""The training loss as an object that runs the networks itself (as StyleGAN2-ADA's ``loss.py``).

:class:`GANLoss` draws the latents, calls the generator and the critic for the critic step and
the generator step, and sums every term: the adversarial one (``model.loss.name``), the critic's
penalties, the generator's auxiliary terms (T2F's KL), the text terms of a
:class:`~t2f.modules.text.TextConditioner`, mode seeking and GAN-INT's interpolated captions.
The formulas are the plain functions of :mod:`t2f.losses`. The module only prepares the batch
and steps the optimizers.

Networks share one face: ``G(z, condition, stage=, alpha=, noise=) -> (images, aux terms)``,
``G.latent_dim``, ``G.sampling_noise(n, None, device)``; ``D.features(images, stage, alpha)``,
``D.head(features, condition) -> (B,)`` scores and, when a text term reads it, ``D.embed(features)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from t2f.losses import (
    FAKE_TERMS,
    LOSS_NAMES,
    REAL_TERMS,
    drift_penalty,
    g_nonsaturating,
    g_wasserstein,
    gradient_penalty,
    interpolate,
    mode_seeking_loss,
    r1_penalty,
)

if TYPE_CHECKING:
    from t2f.modules.text import TextConditioner

__all__ = ["GANLoss", "Players"]


@dataclass
class Players:
    """What one step plays with: the networks, the text component, the augmentation every image
    the critic scores goes through (None: none) and the growth stage."""

    generator: nn.Module
    discriminator: nn.Module
    text: TextConditioner | None = None
    augment: Callable[[Tensor], Tensor] | None = None
    stage: int | None = None
    alpha: float = 1.0

    def seen(self, images: Tensor) -> Tensor:
        """Images as the critic sees them in training (augmented, or as they are)."""
        return images if self.augment is None else self.augment(images)

    def features(self, images: Tensor) -> Tensor:
        return self.discriminator.features(images, self.stage, self.alpha)

    def score(self, images: Tensor, condition: Tensor | None) -> Tensor:
        return self.discriminator.head(self.features(images), condition)

    def text_embeddings(self, images: Tensor, features: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """``(the critic's image embedding, the image word heads' embedding)`` of ``images`` whose
        critic ``features`` are given; None for one that no text term reads."""
        text = self.text
        critic = self.discriminator.embed(features) if text is not None and text.reads_image_embedding else None
        words = self.word_embedding(images, features, critic) if text is not None and text.reads_image_words else None
        return critic, words

    def word_embedding(self, images: Tensor, features: Tensor, critic: Tensor | None = None) -> Tensor:
        """The embedding the image word heads read: the text's word reader's of ``images`` (at this
        growth stage), or without one the critic's (``critic`` if already computed)."""
        reader = self.text.word_reader
        if reader is None:
            return self.discriminator.embed(features) if critic is None else critic
        return reader.embed(reader.features(images, self.stage, self.alpha))

    def fakes(self, n: int, condition: Tensor | None, device: torch.device, with_noise: bool = False
              ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """``(images, auxiliary terms, latents)`` for ``n`` fresh latents; ``with_noise``: the
        generator's other per-image randomness is drawn here and joins the latents."""
        z = torch.randn(n, self.generator.latent_dim, device=device)
        noise = self.generator.sampling_noise(n, None, device) if with_noise else None
        images, aux = self.generator(z, condition, stage=self.stage, alpha=self.alpha, noise=noise)
        latents = z if not noise else torch.cat([z, *(m.flatten(1) for m in noise)], dim=1)
        return images, aux, latents


class GANLoss:
    """The critic's and the generator's losses of one family (``name``) with their extra terms.

    ``mode_seeking`` (MSGAN, Mao et al. 2019): the generator step draws two fakes per condition
    (the batch's first half of conditions, twice) and is penalised by
    ``weight / (mean |x1 - x2| / mean |l1 - l2|)``, large when different latents give one face.
    ``text_interpolation`` (GAN-INT, Reed et al. 2016): the generator is also scored on fakes for
    the midpoints of pairs of the batch's caption embeddings, which have no real image.
    """

    def __init__(
        self,
        name: str = "nonsaturating",
        gp_weight: float = 10.0,
        drift_weight: float = 0.0,
        r1_gamma: float = 0.0,
        r1_interval: int = 1,
        mode_seeking: float = 0.0,
        text_interpolation: float = 0.0,
    ) -> None:
        if name not in LOSS_NAMES:
            raise ValueError(f"model.loss.name={name!r}: choose one of {', '.join(LOSS_NAMES)}")
        if int(r1_interval) != r1_interval or r1_interval < 1:
            raise ValueError(f"model.loss.r1_interval={r1_interval} must be an integer >= 1")
        for key, value in (("gp_weight", gp_weight), ("drift_weight", drift_weight), ("r1_gamma", r1_gamma),
                           ("mode_seeking", mode_seeking), ("text_interpolation", text_interpolation)):
            if not value >= 0:
                raise ValueError(f"model.loss.{key}={value} must be >= 0 (0: off)")
        self.name = name
        self.gp_weight = float(gp_weight)
        self.drift_weight = float(drift_weight)
        self.r1_gamma = float(r1_gamma)
        self.r1_interval = int(r1_interval)
        self.mode_seeking = float(mode_seeking)
        self.text_interpolation = float(text_interpolation)

    @property
    def needs_input_gradients(self) -> bool:
        return self.name == "wgan_gp" or self.r1_gamma > 0

    def r1_due(self, step: int) -> bool:
        """Whether critic step ``step`` (0-based) computes R1: every ``r1_interval`` steps."""
        return self.r1_gamma > 0 and step % self.r1_interval == 0

    def g_loss(self, fake_scores: Tensor) -> Tensor:
        if self.name == "nonsaturating":
            return g_nonsaturating(fake_scores)
        return g_wasserstein(fake_scores)

    # --- the critic step ------------------------------------------------------------------------
    def critic_loss(self, players: Players, real: Tensor, conditions: Mapping[str, Any], step: int = 0,
                    on_real_scores: Callable[[Tensor], None] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Critic loss on ``real`` images against fresh fakes, and its parts for logging.

        ``conditions`` come from the text component (empty: unconditional). With text the critic is
        matching-aware: a real image under a mismatched caption counts as fake, weighted
        ``text.mismatch_weight`` and the fakes ``1 -`` that (half each by default). The gradient
        penalty then covers both kinds of fake pair, half the samples on the line from (real, c) to
        (fake, c) and half on the line from (real, c) to (real, c'), with the norm over image and
        condition jointly: without it the critic can push mismatched scores down without bound and
        the generator's signal collapses. R1 is lazy (StyleGAN2) when ``r1_interval`` > 1: computed
        on critic steps ``step`` that are multiples of the interval, weighted ``gamma / 2 *
        r1_interval``. The critic's features of the real images are computed once and serve every
        condition they are scored under and the text terms. ``on_real_scores`` gets the real scores
        (detached), e.g. for ADA's overfitting signal. Penalties are taken at the images the critic
        scores, augmented when augmentation is on.
        """
        d, text = players.discriminator, players.text
        condition = conditions.get("text_embedding")
        with torch.no_grad():
            fake = players.fakes(real.shape[0], condition, real.device)[0]
        real, fake = players.seen(real), players.seen(fake)
        r1_now = self.r1_due(step)
        real_in = real.detach().requires_grad_(r1_now)
        real_features = players.features(real_in)
        real_scores = d.head(real_features, condition)
        if on_real_scores is not None:
            on_real_scores(real_scores.detach())
        fake_features = players.features(fake.detach())
        fake_scores = d.head(fake_features, condition)
        real_term = REAL_TERMS[self.name](real_scores).mean()
        fake_term = FAKE_TERMS[self.name](fake_scores).mean()
        mismatched = None if text is None else text.mismatched(conditions)
        parts: dict[str, Tensor] = {}
        if mismatched is None:
            parts["adv"] = real_term + fake_term
        else:
            mismatch_term = FAKE_TERMS[self.name](d.head(real_features, mismatched)).mean()
            weight = text.mismatch_weight
            parts["adv"] = real_term + (1 - weight) * fake_term + weight * mismatch_term
        if self.name == "wgan_gp" and self.gp_weight > 0:
            parts["gp"] = self.gp_weight * _wgan_gp(players.score, real, fake, condition, mismatched)
        if self.drift_weight > 0:
            parts["drift"] = self.drift_weight * drift_penalty(real_scores)
        if r1_now:
            parts["r1"] = 0.5 * self.r1_gamma * self.r1_interval * r1_penalty(real_scores, real_in)
        if text is not None:
            text.count_caption_words(conditions)
            embedding, words = players.text_embeddings(real, real_features)
            parts.update(text.image_terms(embedding, conditions, word_embedding=words))
            if text.reads_fake_embedding:
                parts.update(text.fake_image_terms(players.word_embedding(fake.detach(), fake_features), conditions))
            parts.update(text.caption_terms(conditions))
        return sum(parts.values()), parts

    # --- the generator step ---------------------------------------------------------------------
    def generator_loss(self, players: Players, n: int, conditions: Mapping[str, Any], device: torch.device
                       ) -> tuple[Tensor, dict[str, Tensor]]:
        """Generator loss for ``n`` fakes under ``conditions`` (the batch's; they carry no gradient
        to the text encoder), and its parts for logging."""
        seeking = self.mode_seeking > 0 and n >= 2
        if seeking:
            conditions = _paired(conditions, n)
        condition = conditions.get("text_embedding")
        fake, parts, latents = players.fakes(n, condition, device, with_noise=seeking)
        parts = dict(parts)  # the generator's auxiliary terms (T2F's KL)
        seen = players.seen(fake)
        features = players.features(seen)
        parts["adv"] = self.g_loss(players.discriminator.head(features, condition))
        if players.text is not None:
            embedding, words = players.text_embeddings(seen, features)
            parts.update(players.text.image_terms(embedding, conditions, fakes=True, word_embedding=words))
        if seeking:
            parts["mode_seeking"] = self.mode_seeking * mode_seeking_loss(fake, latents)
        if self.text_interpolation > 0 and condition is not None:
            between = torch.lerp(condition, condition.roll(1, dims=0), 0.5)  # GAN-INT's beta = 0.5
            mixed, aux, _ = players.fakes(n, between, device)
            parts["interpolated"] = self.text_interpolation * self.g_loss(players.score(players.seen(mixed), between))
            parts.update({f"interpolated_{k}": v for k, v in aux.items()})
        return sum(parts.values()), parts


def _paired(conditions: Mapping[str, Any], n: int) -> dict[str, Any]:
    """The batch's first half of conditions, twice (an odd batch: one thrice), for mode seeking."""
    if not conditions:
        return {}
    index = torch.arange(n // 2).repeat(2)
    index = torch.cat([index, index[: n - len(index)]])
    index = index.to(conditions["text_embedding"].device)
    paired = {k: v[index] for k, v in conditions.items() if k != "same_caption"}
    if "same_caption" in conditions:
        paired["same_caption"] = conditions["same_caption"][index][:, index]
    return paired


def _wgan_gp(score: Callable[[Tensor, Tensor | None], Tensor], real: Tensor, fake: Tensor,
             condition: Tensor | None, mismatched: Tensor | None) -> Tensor:
    if mismatched is None or condition is None:
        mixed = interpolate(real, fake)
        return gradient_penalty(score(mixed, condition), mixed)
    eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    to_mismatch = torch.arange(real.shape[0], device=real.device) % 2 == 1
    zero = torch.zeros_like(eps)
    e_image = torch.where(to_mismatch, zero, eps).view(-1, *[1] * (real.dim() - 1))
    e_text = torch.where(to_mismatch, eps, zero).view(-1, *[1] * (condition.dim() - 1))
    images = torch.lerp(real.detach(), fake.detach().to(real.dtype), e_image).requires_grad_(True)
    texts = torch.lerp(condition.detach().to(real.dtype), mismatched.detach().to(real.dtype), e_text)
    texts = texts.requires_grad_(True)
    return gradient_penalty(score(images, texts), (images, texts))
