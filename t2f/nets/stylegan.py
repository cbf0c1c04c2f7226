"""StyleGAN (v1) generator: mapping network, style-based synthesis network, progressive growing.

Karras, Laine and Aila, "A Style-Based Generator Architecture for Generative Adversarial
Networks" (CVPR 2019), with the paper's names:

* :class:`MappingNetwork` -- ``z`` (pixel-normalised) -> 8 equalized-LR fully connected layers
  with learning-rate multiplier 0.01 and LeakyReLU 0.2 -> ``w``. Optionally conditional: a
  projection of a condition vector (T2F's text embedding) is concatenated with ``z``.
* :class:`SynthesisNetwork` -- a learned constant 4x4 input, then per resolution two layers,
  each ``conv -> blur (after upsampling) -> noise -> bias -> LeakyReLU -> AdaIN(style)``
  (the 4x4 block's first layer is the constant itself); one toRGB per resolution with the
  ProGAN fade-in. Styles ``ws`` come per layer: ``(B, num_layers, w_dim)``.
* :class:`StyleGANGenerator` -- both, plus style mixing regularisation, the tracked average
  ``w_avg`` (a buffer, so it is in checkpoints) and the truncation trick.

The critic is ProGAN's (:class:`t2f.nets.progan.ProGANDiscriminator`, minibatch stddev) with
StyleGAN's blur before each downsampling (``blur=True``, the paper's ``D_basic``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from t2f.nets.layers import (
    Blur,
    EqualizedConv2d,
    EqualizedLinear,
    PixelNorm,
    check_lr_multiplier,
    upsample2x,
)
from t2f.nets.progan import (
    _check_stage_alpha,
    resolve_channels,
    stage_resolutions,
    validate_resolution,
)
from t2f.nets.recorded import GeneratorNet

__all__ = [
    "AdaIN",
    "Blur",
    "MappingNetwork",
    "NoiseInjection",
    "StyleGANGenerator",
    "SynthesisNetwork",
    "layers_at_stage",
]

_LRELU_SLOPE = 0.2


def layers_at_stage(stage: int) -> int:
    """Number of style layers used at ``stage`` (two per resolution: 4x4 is stage 0)."""
    return 2 * (int(stage) + 1)


class MappingNetwork(nn.Module):
    """``z -> w``: pixel norm, then ``num_layers`` equalized linear layers with LeakyReLU 0.2.

    Args:
        z_dim: latent size.
        w_dim: intermediate latent size (also the hidden width).
        num_layers: fully connected layers (8 in the paper).
        lr_multiplier: learning-rate multiplier of every layer (0.01 in the paper).
        condition_dim: size of a condition vector (0: unconditional). When > 0 it is projected
            by an equalized linear layer to ``embed_dim`` features, which are pixel-normalised
            and concatenated with the pixel-normalised ``z`` before the first layer.
        embed_dim: width of the condition projection (default ``z_dim``).
    """

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_layers: int = 8,
        lr_multiplier: float = 0.01,
        condition_dim: int = 0,
        embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        if z_dim < 1 or w_dim < 1 or num_layers < 1:
            raise ValueError(f"z_dim, w_dim and num_layers must be >= 1, got {z_dim}, {w_dim}, {num_layers}")
        self.z_dim, self.w_dim, self.num_layers = int(z_dim), int(w_dim), int(num_layers)
        self.condition_dim = int(condition_dim)
        self.norm = PixelNorm()
        in_dim = self.z_dim
        if self.condition_dim > 0:
            self.embed_dim = int(embed_dim or self.z_dim)
            self.embed = EqualizedLinear(self.condition_dim, self.embed_dim, gain=1.0)
            in_dim += self.embed_dim
        else:
            self.embed_dim = 0
            self.embed = None
        dims = [in_dim] + [self.w_dim] * self.num_layers
        self.layers = nn.ModuleList(
            EqualizedLinear(dims[i], dims[i + 1], lr_multiplier=lr_multiplier) for i in range(self.num_layers)
        )
        self.act = nn.LeakyReLU(_LRELU_SLOPE)

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (B, {self.z_dim}), got {tuple(z.shape)}")
        x = self.norm(z)
        if self.embed is not None:
            if condition is None:
                raise ValueError(f"this mapping network is conditional (condition_dim={self.condition_dim})")
            x = torch.cat([x, self.norm(self.embed(condition))], dim=1)
        elif condition is not None:
            raise ValueError("condition given but this mapping network was built with condition_dim=0")
        for layer in self.layers:
            x = self.act(layer(x))
        return x


class NoiseInjection(nn.Module):
    """Adds a single-channel noise map scaled by a learned per-channel strength (initialised to 0).

    The strength is stored divided by ``lr_multiplier`` (as the equalized layers store their
    weights), so Adam moves it ``lr_multiplier`` times as fast as the other parameters: at five
    times the paper's learning rate the strengths otherwise grow about five times as fast
    (experiments/results/real_faces.md).
    """

    def __init__(self, channels: int, lr_multiplier: float = 1.0) -> None:
        super().__init__()
        self.lr_multiplier = check_lr_multiplier(lr_multiplier)
        self.weight = nn.Parameter(torch.zeros(channels))

    def strength(self) -> Tensor:
        """The per-channel factor actually applied to the noise."""
        return self.weight * self.lr_multiplier

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + self.strength().view(1, -1, 1, 1) * noise.to(x.dtype)


class AdaIN(nn.Module):
    """Adaptive instance normalisation: ``instance_norm(x) * (A_s(w)) + A_b(w)``.

    ``A_s`` and ``A_b`` are equalized linear maps of ``w`` (gain 1); the scale's bias starts at
    1, so at initialisation the style is the identity up to the random weights.
    """

    def __init__(self, channels: int, w_dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = float(eps)
        self.scale = EqualizedLinear(w_dim, channels, bias_init=1.0, gain=1.0)
        self.shift = EqualizedLinear(w_dim, channels, bias_init=0.0, gain=1.0)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        x = x - x.mean(dim=(2, 3), keepdim=True)
        x = x * torch.rsqrt(x.square().mean(dim=(2, 3), keepdim=True) + self.eps)
        return x * self.scale(w)[:, :, None, None] + self.shift(w)[:, :, None, None]


class StyleLayer(nn.Module):
    """One synthesis layer: ``[upsample] -> [conv 3x3] -> [blur] -> noise -> bias -> lrelu -> AdaIN``.

    Without a convolution (``in_channels=None``) it is the epilogue applied to the constant input.
    """

    def __init__(self, in_channels: int | None, out_channels: int, w_dim: int, upsample: bool = False,
                 noise_lr_multiplier: float = 1.0, noise_inputs: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv = EqualizedConv2d(in_channels, out_channels, 3, bias=False) if in_channels else None
        self.blur = Blur() if upsample else None
        self.noise = NoiseInjection(out_channels, noise_lr_multiplier) if noise_inputs else None
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.act = nn.LeakyReLU(_LRELU_SLOPE)
        self.adain = AdaIN(out_channels, w_dim)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None = None) -> Tensor:
        if self.upsample:
            x = upsample2x(x)
        if self.conv is not None:
            x = self.conv(x)
        if self.blur is not None:
            x = self.blur(x)
        if self.noise is not None:
            x = self.noise(x, noise)
        x = self.act(x + self.bias.view(1, -1, 1, 1))
        return self.adain(x, w)


class SynthesisNetwork(nn.Module):
    """Progressive style-based synthesis network.

    Args:
        w_dim: style size.
        max_resolution: final resolution, a power of two in [8, 1024].
        channels, fmap_base, fmap_max: width per stage, as :func:`t2f.nets.progan.resolve_channels`.
        out_channels: image channels (3).

    ``forward(ws, stage, alpha, noise)`` with ``ws`` of shape ``(B, L, w_dim)`` and ``L`` at least
    :func:`layers_at_stage` ``(stage)`` returns linear (unbounded) images at ``4 * 2**stage`` px.
    ``noise`` is ``None`` (fresh noise) or a list with one ``(B, 1, H, W)`` map per layer used.
    """

    def __init__(
        self,
        w_dim: int,
        max_resolution: int,
        channels: Sequence[int] | None = None,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        out_channels: int = 3,
        noise_lr_multiplier: float = 1.0,
        noise_inputs: bool = True,
    ) -> None:
        super().__init__()
        self.w_dim = int(w_dim)
        self.max_resolution = validate_resolution(max_resolution)
        self.resolutions = stage_resolutions(self.max_resolution)
        self.num_stages = len(self.resolutions)
        self.num_layers = layers_at_stage(self.num_stages - 1)
        self.channels = resolve_channels(self.max_resolution, channels, fmap_base, fmap_max)
        self.out_channels = int(out_channels)
        self.const = nn.Parameter(torch.ones(1, self.channels[0], 4, 4))
        layers: list[StyleLayer] = []
        noise = {"noise_lr_multiplier": noise_lr_multiplier, "noise_inputs": noise_inputs}
        for k, c in enumerate(self.channels):
            in_channels = None if k == 0 else self.channels[k - 1]  # the first layer styles the constant
            layers.append(StyleLayer(in_channels, c, self.w_dim, upsample=k > 0, **noise))
            layers.append(StyleLayer(c, c, self.w_dim, **noise))
        self.layers = nn.ModuleList(layers)
        self.to_rgb = nn.ModuleList(EqualizedConv2d(c, self.out_channels, 1, gain=1.0) for c in self.channels)

    def layer_resolution(self, layer: int) -> int:
        """Resolution of the feature maps (and noise) of style layer ``layer``."""
        return self.resolutions[layer // 2]

    def make_noise(self, batch_size: int, stage: int | None = None, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> list[Tensor]:
        """One noise map per layer (all layers up to ``stage``, by default all), e.g. for fixed grids."""
        n = self.num_layers if stage is None else layers_at_stage(stage)
        on = None if generator is not None else device  # a seeded CPU generator draws on the CPU
        return [
            torch.randn(batch_size, 1, r, r, generator=generator, device=on).to(device or "cpu")
            for r in (self.layer_resolution(i) for i in range(n))
        ]

    def forward(self, ws: Tensor, stage: int | None = None, alpha: float = 1.0,
                noise: Sequence[Tensor] | None = None) -> Tensor:
        stage, alpha = _check_stage_alpha(stage, alpha, self.num_stages)
        used = layers_at_stage(stage)
        if ws.dim() != 3 or ws.shape[1] < used or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape (B, >={used}, {self.w_dim}) at stage {stage}, got {tuple(ws.shape)}")
        if noise is not None and len(noise) < used:
            raise ValueError(f"noise must hold one map per layer ({used} at stage {stage}), got {len(noise)}")
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        prev = x
        for i in range(used):
            if i == used - 2:
                prev = x  # the previous stage's features, for the fade-in
            x = self.layers[i](x, ws[:, i], None if noise is None else noise[i])
        out = self.to_rgb[stage](x)
        if stage > 0 and alpha < 1.0:
            skip = upsample2x(self.to_rgb[stage - 1](prev))
            out = torch.lerp(skip, out, alpha)
        return out


class StyleGANGenerator(GeneratorNet):
    """Mapping + synthesis, with style mixing, the tracked average ``w`` and truncation.

    ``forward(z, condition, stage=, alpha=, noise=)`` is the training pass: images (and no
    auxiliary loss terms), with style mixing regularisation at ``style_mixing_prob`` in training
    mode; :meth:`sample` truncates (layers below ``truncation_cutoff``, None: all) and never mixes.
    See :meth:`styles` for how the per-layer styles are made. In training mode each pass moves
    ``w_avg`` towards the batch mean of ``w``: ``w_avg <- lerp(mean(w), w_avg, w_avg_beta)``.
    """

    family = "stylegan"

    @property
    def text_conditional(self) -> bool:
        return self.mapping.condition_dim > 0

    @property
    def text_dim(self) -> int:
        """The caption embedding size the mapping network reads (0: unconditional)."""
        return self.mapping.condition_dim

    def sampling_noise(self, n: int, generator: torch.Generator | None, device: torch.device | str
                       ) -> list[Tensor]:
        """One noise map per layer and image."""
        return self.synthesis.make_noise(n, generator=generator, device=device)

    def sample(self, z: Tensor, condition: Tensor | None = None, *, stage: int | None = None, alpha: float = 1.0,
               psi: float | Tensor = 1.0, noise: Sequence[Tensor] | None = None, truncation_cutoff: int | None = None
               ) -> Tensor:
        cutoff = self.truncation_cutoff if truncation_cutoff is None else truncation_cutoff
        ws = self.styles(z, stage, condition, psi=psi, truncation_cutoff=cutoff)
        return self.synthesis(ws, stage, alpha, noise)

    @property
    def latent_dim(self) -> int:
        return self.z_dim

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        max_resolution: int,
        mapping_layers: int = 8,
        mapping_lr_multiplier: float = 0.01,
        condition_dim: int = 0,
        embed_dim: int | None = None,
        channels: Sequence[int] | None = None,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        w_avg_beta: float = 0.995,
        out_channels: int = 3,
        noise_lr_multiplier: float = 1.0,
        style_mixing_prob: float = 0.9,
        truncation_cutoff: int | None = 8,
        noise_inputs: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= style_mixing_prob <= 1.0:
            raise ValueError(f"model.generator.style_mixing_prob={style_mixing_prob} must be in [0, 1]")
        if not 0.0 <= w_avg_beta < 1.0:
            raise ValueError(f"model.generator.w_avg_beta={w_avg_beta} must be in [0, 1)")
        self.style_mixing_prob = float(style_mixing_prob)
        self.truncation_cutoff = None if truncation_cutoff is None else int(truncation_cutoff)
        self.z_dim, self.w_dim = int(z_dim), int(w_dim)
        self.w_avg_beta = float(w_avg_beta)
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_multiplier, condition_dim, embed_dim)
        self.synthesis = SynthesisNetwork(w_dim, max_resolution, channels, fmap_base, fmap_max, out_channels,
                                          noise_lr_multiplier, bool(noise_inputs))
        self.num_layers = self.synthesis.num_layers
        self.max_resolution = self.synthesis.max_resolution
        self.register_buffer("w_avg", torch.zeros(self.w_dim))

    @torch.no_grad()
    def update_w_avg(self, w: Tensor) -> None:
        self.w_avg.copy_(w.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

    def styles(
        self,
        z: Tensor,
        stage: int | None,
        condition: Tensor | None = None,
        mixing_prob: float = 0.0,
        z2: Tensor | None = None,
        mix_layer: int | None = None,
        psi: float | Tensor = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool | None = None,
    ) -> Tensor:
        """Per-layer styles ``(B, num_layers, w_dim)``.

        Style mixing: layers ``< mix_layer`` take ``w = mapping(z)`` and the rest
        ``mapping(z2)``. ``mix_layer`` may be given (``z2`` too, else it is drawn); otherwise, with
        probability ``mixing_prob``, a second latent is drawn and the crossover layer is uniform
        in ``[1, layers_at_stage(stage))``, one per batch as in the paper.

        Truncation: ``w <- lerp(w_avg, w, psi)`` on layers ``< truncation_cutoff`` (all if None);
        ``psi`` may be a float or one value per sample. ``update_w_avg`` defaults to
        ``self.training``.
        """
        update = self.training if update_w_avg is None else update_w_avg
        w = self.mapping(z, condition)
        if update:
            self.update_w_avg(w)
        ws = w[:, None].repeat(1, self.num_layers, 1)
        used = layers_at_stage(self.synthesis.num_stages - 1 if stage is None else stage)
        if mix_layer is None and mixing_prob > 0 and used > 1 and float(torch.rand(())) < mixing_prob:
            mix_layer = int(torch.randint(1, used, ()))
        if mix_layer is not None:
            if z2 is None:
                z2 = torch.randn_like(z)
            w2 = self.mapping(z2, condition)
            ws[:, mix_layer:] = w2[:, None]
        if not (isinstance(psi, (int, float)) and psi == 1.0):
            psi_t = torch.as_tensor(psi, dtype=ws.dtype, device=ws.device).reshape(-1, 1, 1)
            cutoff = self.num_layers if truncation_cutoff is None else int(truncation_cutoff)
            ws[:, :cutoff] = self.w_avg.to(ws.dtype).lerp(ws[:, :cutoff], psi_t)
        return ws

    def forward(self, z: Tensor, condition: Tensor | None = None, *, stage: int | None = None, alpha: float = 1.0,
                noise: Sequence[Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        ws = self.styles(z, stage, condition, mixing_prob=self.style_mixing_prob if self.training else 0.0)
        return self.synthesis(ws, stage, alpha, noise), {}

