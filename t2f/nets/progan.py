"""Progressive GAN generator and (optionally conditional) critic.

Karras et al., "Progressive Growing of GANs for Improved Quality, Stability, and
Variation" (ICLR 2018), with the conditional critic of T2F (text embedding projected
and joined to the last critic block, as in StackGAN).

Stages: stage ``k`` works at resolution ``4 * 2**k``; stage 0 is 4x4 and the last stage
is ``max_resolution``. The nets do not own the growth schedule: ``stage`` and the
fade-in weight ``alpha`` are forward arguments (the LightningModule / growth callback
owns them). The parameters of every stage exist from construction, so optimizer state
and checkpoints are continuous across stage switches. Note that parameters of stages
above the current one (and the old-branch toRGB/fromRGB when ``alpha == 1``) receive no
gradient, so DDP must be configured accordingly (``find_unused_parameters=True`` or a
zero-weighted use of every parameter in the LightningModule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from t2f.nets.layers import (
    Blur,
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchStdDev,
    PixelNorm,
    downsample2x,
    upsample2x,
)

__all__ = [
    "MAX_RESOLUTION_RANGE",
    "ProGANDiscriminator",
    "ProGANGenerator",
    "num_stages",
    "resolve_channels",
    "stage_resolutions",
    "validate_resolution",
]

#: Allowed range (inclusive) of ``max_resolution``.
MAX_RESOLUTION_RANGE = (8, 1024)
_LRELU_SLOPE = 0.2


def validate_resolution(max_resolution: int, name: str = "max_resolution") -> int:
    """Return ``max_resolution`` as an int after checking it is a power of two in [8, 1024]."""
    lo, hi = MAX_RESOLUTION_RANGE
    try:
        value = int(max_resolution)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a power of two in [{lo}, {hi}], got {max_resolution!r}"
        ) from None
    if value != max_resolution or value < lo or value > hi or value & (value - 1):
        raise ValueError(f"{name} must be a power of two in [{lo}, {hi}], got {max_resolution!r}")
    return value


def num_stages(max_resolution: int) -> int:
    """Number of stages from 4x4 up to ``max_resolution`` (e.g. 64 -> 5)."""
    return int(math.log2(validate_resolution(max_resolution))) - 1


def stage_resolutions(max_resolution: int) -> list[int]:
    """Resolutions of all stages, ``[4, 8, ..., max_resolution]``."""
    return [4 * 2**k for k in range(num_stages(max_resolution))]


def resolve_channels(
    max_resolution: int,
    channels: Sequence[int] | None = None,
    fmap_base: int = 8192,
    fmap_max: int = 512,
) -> list[int]:
    """Feature-map widths, one per stage (index 0 = 4x4).

    With ``channels`` given it must have exactly one positive entry per stage. Otherwise
    ProGAN's rule is used: the width at resolution ``2**r`` is
    ``min(fmap_base // 2**(r - 1), fmap_max)`` (i.e. ``fmap_base // 2**(stage + 1)``),
    at least 1. The defaults (8192, 512) give ProGAN's CelebA-HQ widths
    512, 512, 512, 512, 256, 128, 64, 32, 16 for 4x4 ... 1024x1024.
    """
    n = num_stages(max_resolution)
    if channels is not None:
        channels = [int(c) for c in channels]
        if len(channels) != n:
            raise ValueError(
                f"channels must have exactly one entry per stage: expected length {n} for "
                f"max_resolution={max_resolution} (stages {stage_resolutions(max_resolution)}), "
                f"got length {len(channels)}: {channels}"
            )
        if any(c < 1 for c in channels):
            raise ValueError(f"channels must all be >= 1, got {channels}")
        return channels
    if fmap_base < 1 or fmap_max < 1:
        raise ValueError(
            f"fmap_base and fmap_max must be >= 1, got fmap_base={fmap_base}, fmap_max={fmap_max}"
        )
    return [max(1, min(int(fmap_base) // 2 ** (k + 1), int(fmap_max))) for k in range(n)]


def _check_stage_alpha(stage: int | None, alpha: float, n: int) -> tuple[int, float]:
    """``stage`` None is the last stage (the full resolution)."""
    stage_i = n - 1 if stage is None else int(stage)
    if (stage is not None and stage_i != stage) or not 0 <= stage_i < n:
        raise ValueError(f"stage must be an int in [0, {n - 1}], got {stage!r}")
    alpha_f = float(alpha)
    if not 0.0 <= alpha_f <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return stage_i, alpha_f


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(_LRELU_SLOPE)


def _join_condition(x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """A (projected) condition vector replicated over the grid and joined to the feature maps."""
    return torch.cat([x, condition[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])], dim=1)


class _GeneratorFirstBlock(nn.Module):
    """latent -> (pixel norm) -> dense to 4x4 -> lrelu, pn -> conv 3x3 -> lrelu, pn."""

    def __init__(self, latent_dim: int, out_channels: int, normalize_latent: bool) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.latent_norm = PixelNorm() if normalize_latent else nn.Identity()
        # ProGAN's dense layer acts as a 4x4 transposed convolution: gain sqrt(2)/4.
        self.dense = EqualizedLinear(latent_dim, out_channels * 16, gain=math.sqrt(2.0) / 4)
        self.conv = EqualizedConv2d(out_channels, out_channels, 3)
        self.act = _lrelu()
        self.norm = PixelNorm()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(self.latent_norm(z)).view(z.shape[0], self.out_channels, 4, 4)
        x = self.norm(self.act(x))
        return self.norm(self.act(self.conv(x)))


class _GeneratorBlock(nn.Module):
    """upsample2x -> [concat projected condition] -> (conv 3x3 -> lrelu -> pixel norm) x 2.

    With ``condition_channels`` the condition, projected by an equalized linear layer and a
    LeakyReLU (as the critic's final block does), is replicated over the grid and joined to the
    block's input: the caption reaches every resolution, not only the 4x4 input."""

    def __init__(self, in_channels: int, out_channels: int, condition_dim: int = 0,
                 condition_channels: int = 0) -> None:
        super().__init__()
        self.condition_proj = (EqualizedLinear(condition_dim, condition_channels)
                               if condition_dim > 0 and condition_channels > 0 else None)
        extra = condition_channels if self.condition_proj is not None else 0
        self.conv1 = EqualizedConv2d(in_channels + extra, out_channels, 3)
        self.conv2 = EqualizedConv2d(out_channels, out_channels, 3)
        self.act = _lrelu()
        self.norm = PixelNorm()

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        x = upsample2x(x)
        if self.condition_proj is not None:
            x = _join_condition(x, self.act(self.condition_proj(condition)))
        x = self.norm(self.act(self.conv1(x)))
        return self.norm(self.act(self.conv2(x)))


class ProGANGenerator(nn.Module):
    """Progressive generator (ProGAN, Table 2).

    Args:
        latent_dim: size of the input latent ``z`` (for T2F: condition + noise).
        max_resolution: final resolution, a power of two in [8, 1024].
        channels: feature-map width per stage (index 0 = 4x4); see :func:`resolve_channels`.
        fmap_base, fmap_max: the width rule used when ``channels`` is None.
        out_channels: image channels (3).
        normalize_latent: pixel-normalise the latent before the first layer (ProGAN).
        condition_dim, condition_channels: with both > 0, ``forward`` takes a ``condition``
            vector of ``condition_dim`` that every block above 4x4 joins to its input as
            ``condition_channels`` projected feature maps (0: the latent is the only input).

    ``forward(z, stage, alpha)`` returns images of shape ``(B, out_channels, R, R)`` with
    ``R = 4 * 2**stage``. The output is **linear and unbounded** (no tanh), as in ProGAN:
    it is trained towards images in [-1, 1] and should be clamped only for display.
    """

    def __init__(
        self,
        latent_dim: int,
        max_resolution: int,
        channels: Sequence[int] | None = None,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        out_channels: int = 3,
        normalize_latent: bool = True,
        condition_dim: int = 0,
        condition_channels: int = 0,
    ) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if condition_dim < 0 or condition_channels < 0:
            raise ValueError(f"condition_dim and condition_channels must be >= 0, got {condition_dim}, "
                             f"{condition_channels}")
        self.condition_dim = int(condition_dim) if condition_channels > 0 else 0
        self.latent_dim = int(latent_dim)
        self.max_resolution = validate_resolution(max_resolution)
        self.resolutions = stage_resolutions(self.max_resolution)
        self.num_stages = len(self.resolutions)
        self.channels = resolve_channels(self.max_resolution, channels, fmap_base, fmap_max)
        self.out_channels = int(out_channels)

        blocks: list[nn.Module] = [
            _GeneratorFirstBlock(self.latent_dim, self.channels[0], normalize_latent)
        ]
        for k in range(1, self.num_stages):
            blocks.append(_GeneratorBlock(self.channels[k - 1], self.channels[k], self.condition_dim,
                                          int(condition_channels)))
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.ModuleList(
            EqualizedConv2d(c, self.out_channels, 1, gain=1.0) for c in self.channels
        )

    def resolution(self, stage: int) -> int:
        """Output resolution at ``stage``."""
        return self.resolutions[stage]

    def forward(self, z: torch.Tensor, stage: int, alpha: float = 1.0,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        """Images at stage ``stage``; ``alpha < 1`` blends in from the previous stage.

        ``out = lerp(upsample2x(toRGB[k-1](h[k-1])), toRGB[k](h[k]), alpha)``, so
        ``alpha = 0`` reproduces the stage ``k-1`` output upsampled and ``alpha = 1`` the
        new branch alone (``alpha`` is ignored at stage 0).
        """
        stage, alpha = _check_stage_alpha(stage, alpha, self.num_stages)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        if self.condition_dim and (condition is None or condition.shape != (z.shape[0], self.condition_dim)):
            got = None if condition is None else tuple(condition.shape)
            raise ValueError(f"condition must have shape ({z.shape[0]}, {self.condition_dim}), got {got}")
        x = prev = self.blocks[0](z)
        for k in range(1, stage + 1):  # prev ends as the last block's input
            prev, x = x, self.blocks[k](x, condition)
        out = self.to_rgb[stage](x)
        if stage > 0 and alpha < 1.0:
            skip = upsample2x(self.to_rgb[stage - 1](prev))
            out = torch.lerp(skip, out, alpha)
        return out


class _DiscriminatorBlock(nn.Module):
    """(conv 3x3 -> lrelu) x 2 -> downsample2x; widths C_k -> C_k -> C_{k-1}.

    With ``blur`` it is StyleGAN's ``D_basic`` block instead: conv 3x3 -> lrelu, then
    blur -> conv 3x3 -> downsample2x -> lrelu (the low-pass filter before the downsampling,
    and the activation after it, as in the official networks_stylegan.py).
    """

    def __init__(self, in_channels: int, out_channels: int, blur: bool = False) -> None:
        super().__init__()
        self.conv1 = EqualizedConv2d(in_channels, in_channels, 3)
        self.conv2 = EqualizedConv2d(in_channels, out_channels, 3)
        self.act = _lrelu()
        self.blur = Blur() if blur else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        if self.blur is None:
            return downsample2x(self.act(self.conv2(x)))
        return self.act(downsample2x(self.conv2(self.blur(x))))


CONDITIONINGS = ("concat", "projection")


class _DiscriminatorFinalBlock(nn.Module):
    """4x4: mbstd -> [concat projected condition] -> conv 3x3 -> conv 4x4 (valid) -> linear -> score,
    or with ``conditioning="projection"`` the score plus the inner product of the last features
    with a linear embedding of the condition (Miyato & Koyama 2018)."""

    def __init__(
        self,
        channels: int,
        mbstd_group_size: int | None,
        mbstd_num_features: int,
        condition_dim: int,
        condition_channels: int,
        conditioning: str = "concat",
    ) -> None:
        super().__init__()
        self.mbstd = (
            MinibatchStdDev(mbstd_group_size, mbstd_num_features)
            if mbstd_num_features > 0
            else None
        )
        extra = mbstd_num_features if self.mbstd is not None else 0
        self.condition_dim = condition_dim
        self.condition_proj = self.condition_embed = None
        if condition_dim > 0 and conditioning == "concat":
            self.condition_proj = EqualizedLinear(condition_dim, condition_channels)
            extra += condition_channels
        elif condition_dim > 0:
            self.condition_embed = EqualizedLinear(condition_dim, channels, gain=1.0)
        self.conv = EqualizedConv2d(channels + extra, channels, 3)
        self.conv4x4 = EqualizedConv2d(channels, channels, 4, padding=0)
        self.out = EqualizedLinear(channels, 1, gain=1.0)
        self.act = _lrelu()

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        if self.mbstd is not None:
            x = self.mbstd(x)
        if self.condition_proj is not None:
            x = _join_condition(x, self.act(self.condition_proj(condition)))
        x = self.act(self.conv(x))
        x = self.act(self.conv4x4(x)).flatten(1)
        score = self.out(x).squeeze(1)
        if self.condition_embed is not None:
            # scaled like self.out's equalized weights, so the caption's part starts no larger
            score = score + (x * self.condition_embed(condition)).sum(1) * x.shape[1] ** -0.5
        return score


class ProGANDiscriminator(nn.Module):
    """Progressive critic (ProGAN, Table 2), optionally conditioned on a vector (T2F).

    Args:
        max_resolution: final resolution, a power of two in [8, 1024].
        channels: feature-map width per stage (index 0 = 4x4), the same convention as
            the generator; see :func:`resolve_channels`.
        fmap_base, fmap_max: the width rule used when ``channels`` is None.
        in_channels: image channels (3).
        mbstd_group_size: minibatch-stddev group size (None: whole batch).
        mbstd_num_features: minibatch-stddev feature maps (0 disables the layer).
        condition_dim: size of the condition vector (0: unconditional). When > 0 the
            condition is projected by an equalized linear layer (+ LeakyReLU) to
            ``condition_channels`` channels, replicated over the 4x4 grid and
            concatenated to the features before the final block's 3x3 convolution.
        condition_channels: projected condition width (default ``max(1, channels[0] // 4)``,
            the 128-of-512 ratio of StackGAN/T2F).
        conditioning: how the condition enters the score: ``"concat"`` (T2F, above) or
            ``"projection"`` (the projection discriminator: the unconditional score plus the inner
            product of the final features with a linear embedding of the condition, which
            estimates how much likelier the image is under its caption than under any).
        embed_dim: size of an image embedding read from the 4x4 features before the condition
            joins (0: none); a contrastive loss aligns it with caption embeddings.
        blur: StyleGAN's critic blocks (``D_basic``): a ``[1, 2, 1]`` blur before each
            downsampling convolution and the activation after the downsampling (False: ProGAN's).

    ``forward(image, stage, alpha, condition)`` returns raw scores of shape ``(B,)``; it is
    ``head(features(image, stage, alpha), condition)``, and ``embed(features)`` gives the
    ``(B, embed_dim)`` image embedding from the same features.
    """

    def __init__(
        self,
        max_resolution: int,
        channels: Sequence[int] | None = None,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        in_channels: int = 3,
        mbstd_group_size: int | None = 4,
        mbstd_num_features: int = 1,
        condition_dim: int = 0,
        condition_channels: int | None = None,
        embed_dim: int = 0,
        blur: bool = False,
        conditioning: str = "concat",
    ) -> None:
        super().__init__()
        if condition_dim < 0:
            raise ValueError(f"condition_dim must be >= 0, got {condition_dim}")
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"model.discriminator.conditioning={conditioning!r}: choose one of "
                             f"{', '.join(CONDITIONINGS)}")
        self.max_resolution = validate_resolution(max_resolution)
        self.resolutions = stage_resolutions(self.max_resolution)
        self.num_stages = len(self.resolutions)
        self.channels = resolve_channels(self.max_resolution, channels, fmap_base, fmap_max)
        self.in_channels = int(in_channels)
        self.condition_dim = int(condition_dim)
        self.blur = bool(blur)
        if condition_channels is None:
            condition_channels = max(1, self.channels[0] // 4)
        if condition_channels < 1:
            raise ValueError(f"condition_channels must be >= 1, got {condition_channels}")
        self.condition_channels = int(condition_channels) if self.condition_dim > 0 else 0

        self.from_rgb = nn.ModuleList(
            nn.Sequential(EqualizedConv2d(self.in_channels, c, 1), _lrelu()) for c in self.channels
        )
        # blocks[0] is the 4x4 final block; blocks[k] (k >= 1) maps 4*2^k -> 4*2^(k-1).
        blocks: list[nn.Module] = [
            _DiscriminatorFinalBlock(
                self.channels[0],
                mbstd_group_size,
                mbstd_num_features,
                self.condition_dim,
                condition_channels,
                conditioning,
            )
        ]
        for k in range(1, self.num_stages):
            blocks.append(_DiscriminatorBlock(self.channels[k], self.channels[k - 1], blur=blur))
        self.blocks = nn.ModuleList(blocks)
        if embed_dim < 0:
            raise ValueError(f"embed_dim must be >= 0, got {embed_dim}")
        self.embed_dim = int(embed_dim)
        self.image_embed = (
            EqualizedLinear(self.channels[0] * 16, self.embed_dim, gain=1.0) if self.embed_dim else None
        )

    def resolution(self, stage: int) -> int:
        """Input resolution expected at ``stage``."""
        return self.resolutions[stage]

    def forward(
        self,
        image: torch.Tensor,
        stage: int | None = None,
        alpha: float = 1.0,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Critic scores ``(B,)`` for images at stage ``stage``: :meth:`head` of :meth:`features`."""
        return self.head(self.features(image, stage, alpha), condition)

    def head(self, features: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``(B,)`` from the 4x4 features under ``condition``. The features do not depend
        on the condition, so one pass over an image batch serves every condition it is scored
        under (its own captions and mismatched ones) and the image embedding."""
        if self.condition_dim > 0:
            if condition is None:
                raise ValueError(
                    f"this critic is conditional (condition_dim={self.condition_dim}): pass condition"
                )
            if condition.dim() != 2 or condition.shape != (features.shape[0], self.condition_dim):
                raise ValueError(
                    f"condition must have shape ({features.shape[0]}, {self.condition_dim}), got {tuple(condition.shape)}"
                )
        elif condition is not None:
            raise ValueError("condition given but this critic was built with condition_dim=0")
        return self.blocks[0](features, condition)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, embed_dim)``: the image embedding, read from the 4x4 features (the image alone)
        by a linear layer."""
        if self.image_embed is None:
            raise ValueError("this critic was built with embed_dim=0: it has no image embedding")
        return self.image_embed(features.flatten(1))

    def features(self, image: torch.Tensor, stage: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        """The 4x4 features ``(B, channels[0], 4, 4)`` that enter the final block.

        With ``alpha < 1`` (stage > 0) the features entering block ``k-1`` are
        ``lerp(fromRGB[k-1](downsample2x(image)), block[k](fromRGB[k](image)), alpha)``,
        so ``alpha = 0`` equals the stage ``k-1`` critic on the downsampled image.
        """
        stage, alpha = _check_stage_alpha(stage, alpha, self.num_stages)
        res = self.resolutions[stage]
        if (
            image.dim() != 4
            or image.shape[1] != self.in_channels
            or tuple(image.shape[2:]) != (res, res)
        ):
            raise ValueError(
                f"image must have shape (B, {self.in_channels}, {res}, {res}) at stage {stage}, "
                f"got {tuple(image.shape)}"
            )
        x = self.from_rgb[stage](image)
        if stage > 0:
            x = self.blocks[stage](x)
            if alpha < 1.0:
                skip = self.from_rgb[stage - 1](downsample2x(image))
                x = torch.lerp(skip, x, alpha)
            for k in range(stage - 1, 0, -1):
                x = self.blocks[k](x)
        return x
