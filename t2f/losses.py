"""GAN losses as plain functions of critic scores, so each can be checked by hand.

Every function returns a scalar that is the mean over the batch. Penalties that
need the critic's gradient take the scores *and* the inputs that produced them:
they call ``torch.autograd.grad(..., create_graph=True)`` on the inputs only, so
the caller still does exactly one normal backward (safe under DDP).
"""

from __future__ import annotations

from collections.abc import Callable

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


def _input_gradient(scores: Tensor, inputs: Tensor) -> Tensor:
    (grad,) = torch.autograd.grad(
        outputs=scores.sum(), inputs=inputs, create_graph=True, retain_graph=True
    )
    return grad


def interpolate(real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random points on the lines between real and fake samples (one epsilon per sample)."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, device=real.device, dtype=real.dtype, generator=generator)
    return torch.lerp(real.detach(), fake.detach(), eps).requires_grad_(True)


def gradient_penalty(scores: Tensor, inputs: Tensor, target: float = 1.0) -> Tensor:
    """WGAN-GP: mean over samples of (||grad_x D(x)|| - target)^2, the norm over all of C, H, W."""
    grad = _input_gradient(scores, inputs)
    norms = grad.flatten(1).norm(2, dim=1)
    return ((norms - target) ** 2).mean()


def r1_penalty(real_scores: Tensor, real_inputs: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): mean over samples of ||grad_x D(x)||^2 on real data.

    The caller multiplies by gamma / 2 (and by the lazy interval when lazy).
    """
    grad = _input_gradient(real_scores, real_inputs)
    return grad.flatten(1).pow(2).sum(dim=1).mean()


def drift_penalty(real_scores: Tensor) -> Tensor:
    """ProGAN's drift term: keeps critic scores near zero; the caller weights it (0.001)."""
    return real_scores.pow(2).mean()


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over dimensions, mean over the batch."""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(dim=1).mean()


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
        critic: Callable[[Tensor], Tensor],
        real: Tensor,
        fake: Tensor,
        mismatched_scores: Tensor | None = None,
        step: int = 0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Critic loss on real vs fake images.

        ``mismatched_scores`` (matching-aware critics: real images scored with another
        sample's caption) count as fake; fakes and mismatches then weigh half each.
        R1 is lazy (StyleGAN2) when ``r1_interval`` > 1: computed only on critic steps
        ``step`` that are multiples of the interval, weighted ``gamma / 2 * r1_interval`` so
        that its average weight stays ``gamma / 2``.
        """
        r1_now = self.r1_due(step)
        real_in = real.detach().requires_grad_(r1_now)
        real_scores = critic(real_in)
        fake_scores = critic(fake.detach())
        parts: dict[str, Tensor] = {}
        real_term = _REAL_TERMS[self.name](real_scores).mean()
        fake_term = _FAKE_TERMS[self.name](fake_scores).mean()
        if mismatched_scores is None:
            parts["adv"] = real_term + fake_term
        else:
            mismatch_term = _FAKE_TERMS[self.name](mismatched_scores).mean()
            parts["adv"] = real_term + 0.5 * (fake_term + mismatch_term)
        if self.name == "wgan_gp" and self.gp_weight > 0:
            mixed = interpolate(real, fake)
            parts["gp"] = self.gp_weight * gradient_penalty(critic(mixed), mixed)
        if self.drift_weight > 0:
            parts["drift"] = self.drift_weight * drift_penalty(real_scores)
        if r1_now:
            weight = 0.5 * self.r1_gamma * self.r1_interval
            parts["r1"] = weight * r1_penalty(real_scores, real_in)
        total = sum(parts.values())
        return total, parts
