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
REAL_TERMS: dict[str, Callable[[Tensor], Tensor]] = {
    "nonsaturating": lambda s: F.softplus(-s),  # -log sigmoid(real)
    "hinge": lambda s: F.relu(1.0 - s),
    "wgan_gp": lambda s: -s,
}
FAKE_TERMS: dict[str, Callable[[Tensor], Tensor]] = {
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


def caption_words(captions: Tensor, first_word: int, num_words: int) -> Tensor:
    """Which vocabulary words each caption contains: (B, ``num_words``), 1 where caption ``b``
    holds word id ``first_word + j``. ``captions`` (B, L) are token ids, where ids below
    ``first_word`` (padding, BOS, EOS, UNK) are not words."""
    present = torch.zeros(len(captions), first_word + num_words, device=captions.device)
    return present.scatter(1, captions, 1.0)[:, first_word:]


def word_prediction_loss(logits: Tensor, targets: Tensor, presence_weight: Tensor | None = None) -> Tensor:
    """Binary cross-entropy of the word logits (B, W) against ``targets`` (B, W): the caption's
    words (``caption_words``) or probabilities, summed over the words, mean over the batch; in
    float32, where probabilities keep their digits. ``presence_weight`` (W,) scales each word's
    term for being present (a rare word's few positives can then count as much as its many
    negatives)."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum",
                                              pos_weight=presence_weight) / len(logits)


