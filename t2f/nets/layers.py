"""Shared building blocks for the progressive and style-based generators.

Everything here is a plain ``nn.Module`` (or a pure function) that knows nothing of
Lightning, so ProGAN (T2F) and StyleGAN reuse the same pieces:

* :class:`EqualizedLinear` / :class:`EqualizedConv2d` -- the equalized learning rate
  of Karras et al. (ProGAN, 2018): parameters are stored with unit variance and scaled
  at runtime by the He constant ``gain / sqrt(fan_in)``. An ``lr_multiplier`` scales
  the effective learning rate of a layer (StyleGAN's mapping network uses 0.01).
* :class:`PixelNorm` -- per-pixel feature vector normalisation (ProGAN Sec. 4.2).
* :class:`MinibatchStdDev` -- minibatch standard deviation feature(s) (ProGAN Sec. 3,
  grouped variant of StyleGAN / StyleGAN2).
* :func:`upsample2x` (nearest) and :func:`downsample2x` (2x2 average pooling).
* :class:`Blur` -- StyleGAN's binomial ``[1, 2, 1]`` low-pass filter, applied after upsampling
  in the generator and before downsampling in the critic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_GAIN",
    "Blur",
    "EqualizedConv2d",
    "EqualizedLinear",
    "MinibatchStdDev",
    "PixelNorm",
    "downsample2x",
    "upsample2x",
]

#: He gain for (leaky) ReLU layers, the ProGAN / StyleGAN default.
DEFAULT_GAIN = math.sqrt(2.0)


def check_lr_multiplier(lr_multiplier: float) -> float:
    lr_multiplier = float(lr_multiplier)
    if not lr_multiplier > 0:
        raise ValueError(f"lr_multiplier must be > 0, got {lr_multiplier}")
    return lr_multiplier


class _EqualizedParameters(nn.Module):
    """Weight and bias storage shared by the equalized layers (see :class:`EqualizedLinear`)."""

    def _init_parameters(self, shape: tuple[int, ...], fan_in: int, bias: bool, bias_init: float,
                         gain: float, lr_multiplier: float) -> None:
        self.gain = float(gain)
        self.lr_multiplier = check_lr_multiplier(lr_multiplier)
        self.weight_scale = self.gain / math.sqrt(fan_in) * self.lr_multiplier
        self.bias_scale = self.lr_multiplier
        self.weight = nn.Parameter(torch.randn(shape) / self.lr_multiplier)
        if bias:
            self.bias = nn.Parameter(torch.full((shape[0],), float(bias_init) / self.lr_multiplier))
        else:
            self.register_parameter("bias", None)

    def effective_weight(self) -> torch.Tensor:
        """The weight actually applied: ``weight * weight_scale``."""
        return self.weight * self.weight_scale

    def effective_bias(self) -> torch.Tensor | None:
        """The bias actually applied: ``bias * lr_multiplier`` (``None`` without bias)."""
        return None if self.bias is None else self.bias * self.bias_scale


class EqualizedLinear(_EqualizedParameters):
    """Fully connected layer with equalized learning rate.

    The stored weight is initialised ``N(0, (1 / lr_multiplier)^2)`` (std
    ``1 / lr_multiplier``) and multiplied at every forward pass by
    ``weight_scale = gain / sqrt(in_features) * lr_multiplier``; the stored bias is
    multiplied by ``lr_multiplier``. Hence at initialisation the effective weight has
    the He std ``gain / sqrt(fan_in)`` whatever the multiplier, while the gradient
    (and, with Adam, the update) of the effective parameters is scaled by
    ``lr_multiplier``.

    The stored bias is initialised to ``bias_init / lr_multiplier`` so that the
    *effective* bias starts at ``bias_init`` (0 by default; StyleGAN's style affine
    layers use 1).

    Args:
        in_features: input size (the fan-in).
        out_features: output size.
        bias: whether to learn an additive bias.
        bias_init: initial value of the effective bias.
        gain: He gain; ``sqrt(2)`` for layers followed by (leaky) ReLU, 1 for linear
            outputs.
        lr_multiplier: learning-rate multiplier (> 0).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        gain: float = DEFAULT_GAIN,
        lr_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._init_parameters((self.out_features, self.in_features), self.in_features, bias,
                              bias_init, gain, lr_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.effective_bias())

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, gain={self.gain:.4g}, lr_multiplier={self.lr_multiplier:g}"
        )


class EqualizedConv2d(_EqualizedParameters):
    """2-D convolution with equalized learning rate (see :class:`EqualizedLinear`).

    The fan-in is ``in_channels * kernel_size ** 2``. ``padding`` defaults to
    ``kernel_size // 2`` ("same" for odd kernels); pass 0 for a valid convolution
    (e.g. ProGAN's final 4x4 critic convolution).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        bias: bool = True,
        bias_init: float = 0.0,
        gain: float = DEFAULT_GAIN,
        lr_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.padding = self.kernel_size // 2 if padding is None else int(padding)
        k = self.kernel_size
        self._init_parameters((self.out_channels, self.in_channels, k, k), self.in_channels * k * k,
                              bias, bias_init, gain, lr_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x,
            self.effective_weight(),
            self.effective_bias(),
            stride=self.stride,
            padding=self.padding,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, bias={self.bias is not None}, gain={self.gain:.4g}, "
            f"lr_multiplier={self.lr_multiplier:g}"
        )


class PixelNorm(nn.Module):
    """Normalise each feature vector to unit mean square: ``x / sqrt(mean(x^2, dim) + eps)``.

    ``dim=1`` is the channel axis of ``(B, C, H, W)`` maps and the feature axis of
    ``(B, C)`` latents, so the same module normalises latents and feature maps.
    """

    def __init__(self, eps: float = 1e-8, dim: int = 1) -> None:
        super().__init__()
        self.eps = float(eps)
        self.dim = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=self.dim, keepdim=True) + self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps:g}, dim={self.dim}"


class MinibatchStdDev(nn.Module):
    """Minibatch standard deviation layer (ProGAN; grouped form of StyleGAN2).

    The batch is split into groups of ``G = min(group_size, B)`` samples (sample ``i``
    belongs to group ``i % (B // G)``, as in the reference implementation) and the
    channels into ``num_features`` equal chunks. For each group and chunk the
    (population) standard deviation over the group is computed per feature and pixel,
    ``sqrt(var + 1e-8)``, and averaged over the chunk's channels and all pixels. The
    resulting ``num_features`` scalars are replicated over ``H x W`` and appended as new
    channels to every sample of the group: the output has ``C + num_features`` channels.

    If ``B`` is not divisible by ``G`` (e.g. a ragged last batch), the largest divisor of
    ``B`` not above ``G`` is used instead of failing; ``group_size=None`` uses the whole
    batch as one group.
    """

    def __init__(
        self, group_size: int | None = 4, num_features: int = 1, eps: float = 1e-8
    ) -> None:
        super().__init__()
        if group_size is not None and group_size < 1:
            raise ValueError(f"group_size must be >= 1 or None, got {group_size}")
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        self.group_size = group_size
        self.num_features = int(num_features)
        self.eps = float(eps)

    def effective_group_size(self, batch_size: int) -> int:
        """Group size used for a batch of ``batch_size`` samples."""
        group = batch_size if self.group_size is None else min(self.group_size, batch_size)
        while batch_size % group:
            group -= 1
        return group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(
                f"MinibatchStdDev expects (B, C, H, W) input, got shape {tuple(x.shape)}"
            )
        b, c, h, w = x.shape
        f = self.num_features
        if c % f:
            raise ValueError(
                f"MinibatchStdDev: channels ({c}) must be divisible by num_features ({f})"
            )
        g = self.effective_group_size(b)
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, n, F, c, H, W]
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + self.eps).sqrt()  # [n, F, c, H, W]
        y = y.mean(dim=(2, 3, 4))  # [n, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [B, F, H, W]
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_features={self.num_features}"


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling of a ``(B, C, H, W)`` tensor."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """2x downsampling of a ``(B, C, H, W)`` tensor by 2x2 average pooling."""
    return F.avg_pool2d(x, kernel_size=2, stride=2)


class Blur(nn.Module):
    """Depthwise low-pass filter: the separable binomial kernel ``[1, 2, 1]``, normalised to sum 1,
    with zero padding ("same" size), as StyleGAN's ``blur2d``.

    StyleGAN (Karras et al. 2019, Sec. 2 / networks_stylegan.py) blurs after every upsampling in
    the generator and before every downsampling in the critic, so that nearest-neighbour
    upsampling and 2x2 pooling do not pass aliased high frequencies.
    """

    def __init__(self) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        k = torch.outer(k, k)
        self.register_buffer("kernel", (k / k.sum())[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SelfAdjointBlur.apply(x, self.kernel)


class _SelfAdjointBlur(torch.autograd.Function):
    """The blur as its own backward.

    A symmetric kernel with zero "same" padding is self-adjoint, so the gradient of a blur is the
    blur of the gradient, and so on for every order. Autograd's own double backward of a depthwise
    convolution (the gradient penalties') also computes the kernel's gradient, one channel at a
    time (a thousand small convolutions per StyleGAN step at 512 channels), though the kernel is
    fixed.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(kernel)
        c = x.shape[1]
        return F.conv2d(x, kernel.to(x.dtype).expand(c, 1, 3, 3), padding=1, groups=c)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        kernel, = ctx.saved_tensors
        return _SelfAdjointBlur.apply(grad, kernel), None
