"""GAN-INT-CLS (Reed et al. 2016, "Generative Adversarial Text to Image Synthesis") generator and critic.

The text-to-image baseline that T2F builds on: a DCGAN conditioned on a caption embedding. The
generator compresses the embedding by a linear layer and concatenates it with ``z``; the critic
compresses it the same way and replicates it spatially over its 4x4 features before scoring. The
matching-aware loss (GAN-CLS: real image with a wrong caption counts as fake) and interpolated
embeddings (GAN-INT) are the training loss's business, not the nets'.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from t2f.nets.dcgan import critic_layers, critic_width, dcgan_init, generator_layers, norm_layer
from t2f.nets.recorded import GeneratorNet

__all__ = ["GANINTCLSDiscriminator", "GANINTCLSGenerator"]


def _compress(text_dim: int, embed_dim: int) -> nn.Sequential:
    """The caption embedding's compression: a linear layer and a leaky ReLU, as in the paper."""
    return nn.Sequential(nn.Linear(text_dim, embed_dim), nn.LeakyReLU(0.2))


def _check_condition(condition: Tensor | None, batch: int, text_dim: int) -> Tensor:
    if condition is None:
        raise ValueError("GAN-INT-CLS needs a caption embedding: pass condition (B, text_dim)")
    if condition.dim() != 2 or tuple(condition.shape) != (batch, text_dim):
        raise ValueError(f"condition must have shape ({batch}, {text_dim}), got {tuple(condition.shape)}")
    return condition


class GANINTCLSGenerator(GeneratorNet):
    """DCGAN generator on ``z`` concatenated with the compressed caption embedding."""

    family = "gan_int_cls"
    text_conditional = True

    def __init__(
        self,
        text_dim: int,
        latent_dim: int = 100,
        resolution: int = 64,
        width: int = 64,
        embed_dim: int = 128,
        image_channels: int = 3,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.text_dim = text_dim
        self.resolution = resolution
        self.embed_dim = embed_dim
        self.compress = _compress(text_dim, embed_dim)
        layers = generator_layers(latent_dim + embed_dim, resolution, width, image_channels)
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: Tensor, condition: Tensor | None = None, *, stage: int | None = None,
                alpha: float = 1.0, noise: Sequence[Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Images ``(B, image_channels, resolution, resolution)`` in [-1, 1] and the auxiliary loss
        terms (none). ``stage``, ``alpha`` and ``noise`` are ignored: this net does not grow."""
        batch = z.shape[0] if z.dim() > 0 else 0
        if tuple(z.shape) not in ((batch, self.latent_dim), (batch, self.latent_dim, 1, 1)):
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        condition = _check_condition(condition, batch, self.text_dim)
        x = torch.cat([z.reshape(batch, self.latent_dim), self.compress(condition)], dim=1)
        return self.net(x.view(batch, -1, 1, 1)), {}

    def sample(self, z: Tensor, condition: Tensor | None = None, *, stage: int | None = None, alpha: float = 1.0,
               psi: float = 1.0, noise: Sequence[Tensor] | None = None, truncation_cutoff: int | None = None
               ) -> Tensor:
        return self(z * psi, condition)[0]  # the mean of z is 0: psi pulls towards the mean latent


class GANINTCLSDiscriminator(nn.Module):
    """DCGAN critic whose 4x4 features meet the spatially replicated, compressed caption embedding.

    Returns one raw score (logit) per image-caption pair.
    """

    def __init__(
        self,
        text_dim: int,
        resolution: int = 64,
        width: int = 64,
        embed_dim: int = 128,
        norm: str = "batch",
        image_channels: int = 3,
    ) -> None:
        super().__init__()
        self.condition_dim = text_dim
        self.embed_dim = 0  # no image embedding head
        self.text_embed_dim = embed_dim  # width of the compressed caption embedding
        self.resolution = resolution
        self.image_channels = image_channels
        self.norm = norm
        channels = critic_width(resolution, width)
        layers = critic_layers(resolution, width, norm, image_channels)
        self.net = nn.Sequential(*layers)
        self.feature_channels = channels
        self.compress = _compress(text_dim, embed_dim)
        self.joint = nn.Sequential(
            nn.Conv2d(channels + embed_dim, channels, 1, 1, 0, bias=False),
            norm_layer(norm, channels),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.out = nn.Conv2d(channels, 1, 4, 1, 0, bias=False)
        self.apply(dcgan_init)

    def features(self, images: Tensor, stage: int | None = None, alpha: float = 1.0) -> Tensor:
        """The 4x4 features ``(B, C, 4, 4)`` of the images alone (``stage``, ``alpha`` ignored)."""
        expected = (self.image_channels, self.resolution, self.resolution)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must have shape (B, {', '.join(map(str, expected))}), got {tuple(images.shape)}")
        return self.net(images)

    def head(self, features: Tensor, condition: Tensor | None) -> Tensor:
        """Logits ``(B,)`` from the 4x4 features under ``condition``. The features do not depend on
        the condition, so one pass over an image batch serves matching and mismatched captions."""
        expected = (self.feature_channels, 4, 4)
        if features.dim() != 4 or tuple(features.shape[1:]) != expected:
            raise ValueError(
                f"features must have shape (B, {', '.join(map(str, expected))}), got {tuple(features.shape)}"
            )
        batch = features.shape[0]
        condition = _check_condition(condition, batch, self.condition_dim)
        text = self.compress(condition)[:, :, None, None].expand(-1, -1, 4, 4)
        joint = self.joint(torch.cat([features, text], dim=1))
        return self.out(joint).flatten()

    def forward(self, images: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.head(self.features(images), condition)
