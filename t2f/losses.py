"""GAN losses as plain functions of critic scores, so each can be checked by hand.

Every function returns a scalar that is the mean over the batch. Penalties that
need the critic's gradient take the scores *and* the inputs that produced them:
they call ``torch.autograd.grad(..., create_graph=True)`` on the inputs only, so
the caller still does exactly one normal backward (safe under DDP).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

LOSS_NAMES = ("nonsaturating", "hinge", "wgan_gp")


# --- adversarial terms -------------------------------------------------------------------


# Per-sample critic terms: the critic loss is mean(real term) + mean(fake term).
_REAL_TERMS: dict[str, Callable[[Tensor], Tensor]] = {
    "nonsaturating": lambda s: F.softplus(-s),  # -log sigmoid(real)
    "hinge": lambda s: F.relu(1.0 - s),
    "wgan_gp": lambda s: -s,
}
_FAKE_TERMS: dict[str, Callable[[Tensor], Tensor]] = {
    "nonsaturating": F.softplus,  # -log(1 - sigmoid(fake))
    "hinge": lambda s: F.relu(1.0 + s),
    "wgan_gp": lambda s: s,
}


def g_nonsaturating(fake_scores: Tensor) -> Tensor:
    """Non-saturating generator loss: -log sigmoid(fake)."""
    return F.softplus(-fake_scores).mean()


def g_wasserstein(fake_scores: Tensor) -> Tensor:
    """Generator loss shared by WGAN and hinge: raise the critic's score of fakes."""
    return -fake_scores.mean()


# --- regularisers ------------------------------------------------------------------------


def _input_gradient(scores: Tensor, inputs: Tensor | Sequence[Tensor]) -> Tensor:
    """Per-sample gradient of the scores, flattened and joined over all ``inputs``: (B, N)."""
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    grads = torch.autograd.grad(
        outputs=scores.sum(), inputs=inputs, create_graph=True, retain_graph=True
    )
    return torch.cat([g.flatten(1) for g in grads], dim=1)


def interpolate(real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random points on the lines between real and fake samples (one epsilon per sample)."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, device=real.device, dtype=real.dtype, generator=generator)
    return torch.lerp(real.detach(), fake.detach().to(real.dtype), eps).requires_grad_(True)


def gradient_penalty(scores: Tensor, inputs: Tensor | Sequence[Tensor], target: float = 1.0) -> Tensor:
    """WGAN-GP: mean over samples of (||grad D|| - target)^2, the norm over all of C, H, W.

    With several inputs (an image and the condition it is scored under) the norm is taken over
    all of them jointly: the critic is kept 1-Lipschitz in the pair, not in the image alone.
    """
    norms = _input_gradient(scores, inputs).norm(2, dim=1)
    return ((norms - target) ** 2).mean()


def r1_penalty(real_scores: Tensor, real_inputs: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): mean over samples of ||grad_x D(x)||^2 on real data.

    The caller multiplies by gamma / 2 (and by the lazy interval when lazy).
    """
    return _input_gradient(real_scores, real_inputs).pow(2).sum(dim=1).mean()


def drift_penalty(real_scores: Tensor) -> Tensor:
    """ProGAN's drift term: keeps critic scores near zero; the caller weights it (0.001)."""
    return real_scores.pow(2).mean()


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over dimensions, mean over the batch."""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(dim=1).mean()


def contrastive_loss(image_embedding: Tensor, text_embedding: Tensor, temperature: float = 0.1,
                     same_caption: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE between images and their captions (CLIP; XMC-GAN's sentence term).

    Cosine similarities over the batch divided by ``temperature``; each image must pick out
    its own caption among the batch's and each caption its own image. ``same_caption``
    (B, B) marks pairs of samples with the same sentence: those are not counted as negatives.
    """
    image = F.normalize(image_embedding, dim=1)
    text = F.normalize(text_embedding, dim=1)
    logits = image @ text.t() / temperature
    if same_caption is not None:
        own = torch.eye(len(text), dtype=torch.bool, device=text.device)
        logits = logits.masked_fill(same_caption & ~own, float("-inf"))
    targets = torch.arange(len(text), device=text.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def mode_seeking_loss(images: Tensor, latents: Tensor, eps: float = 1e-5) -> Tensor:
    """MSGAN's term for two fakes per condition (first half and second half of the batch share
    conditions): ``1 / (mean |x1 - x2| / mean |l1 - l2| + eps)``, which falls as different latents
    give more different images for the same condition."""
    half = images.shape[0] // 2
    image_gap = (images[:half] - images[half:2 * half]).abs().mean()
    latent_gap = (latents[:half] - latents[half:2 * half]).abs().mean()
    return 1.0 / (image_gap / latent_gap + eps)


def word_prediction_loss(logits: Tensor, captions: Tensor, first_word: int) -> Tensor:
    """Which vocabulary words each caption contains, predicted from its embedding: binary
    cross-entropy summed over the words, mean over the batch.

    ``logits`` (B, V - first_word) score the word ids ``first_word..V-1``; ``captions`` (B, L)
    are token ids, where ids below ``first_word`` (padding, BOS, EOS, UNK) are not words.
    """
    present = torch.zeros(len(captions), first_word + logits.shape[1], device=logits.device, dtype=logits.dtype)
    present = present.scatter(1, captions, 1.0)[:, first_word:]
    return F.binary_cross_entropy_with_logits(logits, present, reduction="sum") / len(captions)


# --- loss selection ----------------------------------------------------------------------


class AdversarialLoss:
    """The adversarial terms of one loss family, selected by name from the config.

    ``d_loss`` returns the total critic loss and a dict of its parts for logging;
    ``critic`` maps images to scores so that penalties can differentiate it.
    """

    def __init__(
        self,
        name: str = "nonsaturating",
        gp_weight: float = 10.0,
        drift_weight: float = 0.0,
        r1_gamma: float = 0.0,
        r1_interval: int = 1,
    ) -> None:
        if name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {name!r}: choose one of {', '.join(LOSS_NAMES)}")
        self.name = name
        self.gp_weight = float(gp_weight)
        self.drift_weight = float(drift_weight)
        self.r1_gamma = float(r1_gamma)
        if int(r1_interval) != r1_interval or r1_interval < 1:
            raise ValueError(f"loss r1_interval={r1_interval} must be an integer >= 1")
        self.r1_interval = int(r1_interval)

    def r1_due(self, step: int) -> bool:
        """Whether critic step ``step`` (0-based) computes R1: every ``r1_interval`` steps."""
        return self.r1_gamma > 0 and step % self.r1_interval == 0

    @property
    def needs_input_gradients(self) -> bool:
        return self.name == "wgan_gp" or self.r1_gamma > 0

    def g_loss(self, fake_scores: Tensor) -> Tensor:
        if self.name == "nonsaturating":
            return g_nonsaturating(fake_scores)
        return g_wasserstein(fake_scores)

    def d_loss(
        self,
        critic: Callable[[Tensor, Tensor | None], Tensor],
        real: Tensor,
        fake: Tensor,
        condition: Tensor | None = None,
        mismatched: Tensor | None = None,
        step: int = 0,
        trunk: Callable[[Tensor], Tensor] | None = None,
        real_terms: Callable[[Tensor], dict[str, Tensor]] | None = None,
        on_real_scores: Callable[[Tensor], None] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Critic loss on real vs fake images; ``critic(trunk(images), condition)`` gives scores (B,).

        ``trunk`` is the part of the critic that reads the images alone (default: none, the
        ``critic`` sees the images): it runs once over the real images for every condition they
        are scored under, and ``real_terms`` (extra critic terms, e.g. a contrastive one) read the
        same real features; their terms join the returned parts and the total.

        ``condition`` is what the real and fake images are scored under (e.g. their captions'
        embeddings). With ``mismatched`` (other samples' conditions) the critic is
        matching-aware: a real image under a mismatched condition counts as fake, and fakes and
        mismatches weigh half each. The gradient penalty then covers both kinds of fake pair,
        half the samples on the line from (real, c) to (fake, c) and half on the line from
        (real, c) to (real, c'), with the norm over image and condition jointly: without it the
        critic can push mismatched scores down without bound and the generator's signal
        collapses. R1 is lazy (StyleGAN2) when ``r1_interval`` > 1: computed only on critic
        steps ``step`` that are multiples of the interval, weighted ``gamma / 2 * r1_interval``
        so that its average weight stays ``gamma / 2``.

        ``on_real_scores`` is handed the real images' scores (detached), e.g. for ADA's
        overfitting signal E[sign(D(real))]. Images are scored, and penalised, as they are
        passed: a caller that augments them passes the augmented ones (see t2f.augment).
        """
        trunk = trunk or (lambda images: images)
        r1_now = self.r1_due(step)
        real_in = real.detach().requires_grad_(r1_now)
        real_features = trunk(real_in)
        real_scores = critic(real_features, condition)
        if on_real_scores is not None:
            on_real_scores(real_scores.detach())
        fake_scores = critic(trunk(fake.detach()), condition)
        parts: dict[str, Tensor] = {}
        real_term = _REAL_TERMS[self.name](real_scores).mean()
        fake_term = _FAKE_TERMS[self.name](fake_scores).mean()
        if mismatched is None:
            parts["adv"] = real_term + fake_term
        else:
            mismatch_term = _FAKE_TERMS[self.name](critic(real_features, mismatched)).mean()
            parts["adv"] = real_term + 0.5 * (fake_term + mismatch_term)
        if self.name == "wgan_gp" and self.gp_weight > 0:
            scored = lambda images, c: critic(trunk(images), c)  # noqa: E731
            parts["gp"] = self.gp_weight * self._wgan_gp(scored, real, fake, condition, mismatched)
        if self.drift_weight > 0:
            parts["drift"] = self.drift_weight * drift_penalty(real_scores)
        if r1_now:
            weight = 0.5 * self.r1_gamma * self.r1_interval
            parts["r1"] = weight * r1_penalty(real_scores, real_in)
        if real_terms is not None:
            parts.update(real_terms(real_features))
        total = sum(parts.values())
        return total, parts

    @staticmethod
    def _wgan_gp(critic: Callable[[Tensor, Tensor | None], Tensor], real: Tensor, fake: Tensor,
                 condition: Tensor | None, mismatched: Tensor | None) -> Tensor:
        if mismatched is None or condition is None:
            mixed = interpolate(real, fake)
            return gradient_penalty(critic(mixed, condition), mixed)
        eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
        to_mismatch = torch.arange(real.shape[0], device=real.device) % 2 == 1
        zero = torch.zeros_like(eps)
        e_image = torch.where(to_mismatch, zero, eps).view(-1, *[1] * (real.dim() - 1))
        e_text = torch.where(to_mismatch, eps, zero).view(-1, *[1] * (condition.dim() - 1))
        images = torch.lerp(real.detach(), fake.detach().to(real.dtype), e_image).requires_grad_(True)
        texts = torch.lerp(condition.detach().to(real.dtype), mismatched.detach().to(real.dtype), e_text).requires_grad_(True)
        return gradient_penalty(critic(images, texts), (images, texts))
