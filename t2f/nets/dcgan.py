"""DCGAN (Radford et al. 2016) generator and discriminator for 8 to 128 pixel images.

The layout follows the PyTorch DCGAN example: a 4x4 projection of z, then stride-2
transposed convolutions that halve the channels while doubling the resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from t2f.nets.recorded import GeneratorNet

DCGAN_RESOLUTIONS = (8, 16, 32, 64, 128)
NORMS = ("batch", "layer", "none")


def _num_upsamplings(resolution: int) -> int:
    if resolution not in DCGAN_RESOLUTIONS:
        raise ValueError(
            f"DCGAN supports resolutions {', '.join(map(str, DCGAN_RESOLUTIONS))}, got {resolution}: "
            "set dataset.resolution to one of them"
        )
    return int(math.log2(resolution)) - 2


def dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) for convolutions and N(1, 0.02) for norm scales, as in the paper."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The critic's normalisation: ``batch``, ``layer`` (per sample: safe with gradient penalties) or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # per-sample normalisation: safe with gradient penalties
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}: choose one of {', '.join(NORMS)}")


def generator_layers(in_channels: int, resolution: int, width: int, image_channels: int = 3) -> list[nn.Module]:
    """The transposed-convolution stack from a (B, in_channels, 1, 1) code to tanh images."""
    ups = _num_upsamplings(resolution)
    channels = [width * 2 ** (ups - 1 - i) for i in range(ups)]  # e.g. 512,256,128,64
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(in_channels, channels[0], 4, 1, 0, bias=False),
        nn.BatchNorm2d(channels[0]),
        nn.ReLU(True),
    ]
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [
            nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(True),
        ]
    return layers + [nn.ConvTranspose2d(channels[-1], image_channels, 4, 2, 1, bias=False), nn.Tanh()]


def critic_layers(resolution: int, width: int, norm: str, image_channels: int = 3) -> list[nn.Module]:
    """The strided-convolution stack from images to 4x4 features of ``critic_width`` channels."""
    ups = _num_upsamplings(resolution)
    channels = [width * 2**i for i in range(ups)]  # e.g. 64,128,256,512
    layers: list[nn.Module] = [
        nn.Conv2d(image_channels, channels[0], 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
    ]
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [
            nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
            norm_layer(norm, c_out),
            nn.LeakyReLU(0.2, inplace=True),
        ]
    return layers


def critic_width(resolution: int, width: int) -> int:
    """Channels of :func:`critic_layers`' 4x4 features."""
    return width * 2 ** (_num_upsamplings(resolution) - 1)


class DCGANGenerator(GeneratorNet):
    family = "dcgan"

    def __init__(
        self, latent_dim: int = 100, resolution: int = 64, width: int = 64, image_channels: int = 3
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.resolution = int(resolution)
        layers = generator_layers(latent_dim, resolution, width, image_channels)
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: Tensor, condition: Tensor | None = None, *, stage: int | None = None, alpha: float = 1.0,
                noise: Sequence[Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Images in [-1, 1] and no auxiliary loss terms (unconditional, does not grow)."""
        if condition is not None:
            raise ValueError("condition given but the DCGAN generator is unconditional")
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1)), {}

    def sample(self, z: Tensor, condition: Tensor | None = None, *, stage: int | None = None, alpha: float = 1.0,
               psi: float = 1.0, noise: Sequence[Tensor] | None = None, truncation_cutoff: int | None = None
               ) -> Tensor:
        return self(z * psi)[0]  # the mean of z is 0: psi pulls towards the mean latent


class DCGANDiscriminator(nn.Module):
    """One raw score (logit) per image: ``head(features(image))``, the last convolution apart so
    that the critic has the same face as the others (unconditional, no image embedding)."""

    condition_dim = 0
    embed_dim = 0

    def __init__(
        self, resolution: int = 64, width: int = 64, image_channels: int = 3, norm: str = "batch"
    ) -> None:
        super().__init__()
        layers = critic_layers(resolution, width, norm, image_channels)
        layers += [nn.Conv2d(critic_width(resolution, width), 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)
        self.norm = norm
        self.apply(dcgan_init)

    def features(self, image: Tensor, stage: int | None = None, alpha: float = 1.0) -> Tensor:
        """The 4x4 features that enter the last convolution."""
        return self.net[:-1](image)

    def head(self, features: Tensor, condition: Tensor | None = None) -> Tensor:
        if condition is not None:
            raise ValueError("condition given but the DCGAN critic is unconditional")
        return self.net[-1](features).flatten()

    def forward(self, image: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.head(self.features(image), condition)

