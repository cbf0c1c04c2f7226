"""Differentiable augmentation of everything the critic sees, for small datasets.

DiffAugment (Zhao et al. 2020): the same random transformations are applied to real and
generated images before every critic call (critic step and generator step), so the critic
cannot memorise the few real faces while the generator, whose gradient flows back through
the transformations, is still asked for un-augmented faces. The policies and their ranges
are DiffAugment's:

* ``color``: brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5)
  (images in [-1, 1]; nothing is clamped, which would stop gradients);
* ``translation``: a shift of up to 1/8 of the image in each direction, zero padded;
* ``cutout``: one zeroed square of half the image side at a random place.

Each transformation is applied to each image with probability ``p`` (DiffAugment: 1).
:class:`Augment` holds a policy and ``p``; with ``ada_target`` it adapts ``p`` as in
StyleGAN2-ADA (Karras et al. 2020): the overfitting signal r_t = E[sign(D(real))] is
gathered over ``ada_interval`` critic steps and ``p`` moves towards more augmentation when
r_t is above the target, less when below, by at most 1 per ``ada_kimg`` thousand images.

Random numbers come from ``generator`` when one is given, else from torch's default
generator of the images' device: in training that is the per-rank seeded stream that
``t2f.callbacks.rng.RankSeed`` saves in checkpoints, so a resumed run draws the same
augmentations. No Lightning here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Probability = float | Tensor


# --- random draws ------------------------------------------------------------------------


def _uniform(x: Tensor, generator: torch.Generator | None, low: float = 0.0, high: float = 1.0) -> Tensor:
    """One U(low, high) value per image, shaped (N, 1, 1, 1) in the images' dtype and device."""
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape[0], device=device, generator=generator)
    return (low + (high - low) * u).to(x.device, x.dtype).view(-1, 1, 1, 1)


def _integers(x: Tensor, generator: torch.Generator | None, low: int, high: int) -> Tensor:
    """One integer in [low, high) per image, shaped (N, 1, 1) on the images' device."""
    device = generator.device if generator is not None else x.device
    return torch.randint(low, high, (x.shape[0],), device=device, generator=generator).to(x.device).view(-1, 1, 1)


def _chosen(x: Tensor, p: Probability, generator: torch.Generator | None) -> Tensor | None:
    """Which images (N, 1, 1, 1) bool a transformation applies to, each with probability ``p``;
    None when ``p`` is the number 1 (all of them: no draw)."""
    if not torch.is_tensor(p) and float(p) >= 1.0:
        return None
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape[0], device=device, generator=generator).to(x.device)  # fp32: p is not rounded
    return (u < torch.as_tensor(p, device=x.device, dtype=u.dtype)).view(-1, 1, 1, 1)


def _only_chosen(value: Tensor, identity: float, chosen: Tensor | None) -> Tensor:
    """``value`` for chosen images, ``identity`` (the no-op value) for the others."""
    return value if chosen is None else torch.where(chosen, value, torch.full_like(value, identity))


# --- the transformations -----------------------------------------------------------------


def brightness(x: Tensor, generator: torch.Generator | None = None, p: Probability = 1.0) -> Tensor:
    """Adds U(-0.5, 0.5) to every pixel of an image (DiffAugment's ``rand_brightness``)."""
    shift = _only_chosen(_uniform(x, generator, -0.5, 0.5), 0.0, _chosen(x, p, generator))
    return x + shift


def saturation(x: Tensor, generator: torch.Generator | None = None, p: Probability = 1.0) -> Tensor:
    """Scales each pixel's distance from its channel mean by U(0, 2) (0: grey, 2: vivid)."""
    factor = _only_chosen(_uniform(x, generator, 0.0, 2.0), 1.0, _chosen(x, p, generator))
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * factor + mean


def contrast(x: Tensor, generator: torch.Generator | None = None, p: Probability = 1.0) -> Tensor:
    """Scales each pixel's distance from the image's mean by U(0.5, 1.5)."""
    factor = _only_chosen(_uniform(x, generator, 0.5, 1.5), 1.0, _chosen(x, p, generator))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor + mean


def color(x: Tensor, generator: torch.Generator | None = None, p: Probability = 1.0) -> Tensor:
    """DiffAugment's ``color`` policy: brightness, then saturation, then contrast."""
    return contrast(saturation(brightness(x, generator, p), generator, p), generator, p)


def translation(x: Tensor, generator: torch.Generator | None = None, p: Probability = 1.0,
                ratio: float = 0.125) -> Tensor:
    """Shifts each image by up to ``ratio`` of its height and width (integer pixels, at least
    one at 4 px), filling what comes in with zeros; a gather, so gradients reach the pixels kept."""
    n, _, h, w = x.shape
    shift_h, shift_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    chosen = _chosen(x, p, generator)
    keep = 1 if chosen is None else chosen.view(-1, 1, 1).long()
    dy = _integers(x, generator, -shift_h, shift_h + 1) * keep
    dx = _integers(x, generator, -shift_w, shift_w + 1) * keep
    # source row/column of each output pixel, in the 1-pixel zero-padded image (0 and h+1: padding)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (N, H+2, W+2, C)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: Tensor, generator: torch.Generator | None = None, p: Probability = 1.0,
           ratio: float = 0.5) -> Tensor:
    """Zeroes one square of ``ratio`` of the image's side per image, centred anywhere in the
    image (so it may be cut by the border), as DiffAugment's ``rand_cutout``."""
    _, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = _integers(x, generator, 0, h + (1 - size_h % 2)) - size_h // 2
    left = _integers(x, generator, 0, w + (1 - size_w % 2)) - size_w // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)  # (N, H, W)
    chosen = _chosen(x, p, generator)
    if chosen is not None:
        hole = hole & chosen.view(-1, 1, 1)
    return x * (~hole).unsqueeze(1).to(x.dtype)


POLICIES: dict[str, Callable[..., Tensor]] = {"color": color, "translation": translation, "cutout": cutout}


def parse_policy(policy: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"color,translation,cutout"`` or a list of names -> the names, checked; None or "" -> ()."""
    if policy is None:
        return ()
    names = policy.split(",") if isinstance(policy, str) else list(policy)
    names = [str(name).strip() for name in names if str(name).strip()]
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(f"model.augment.policy: unknown {', '.join(map(repr, unknown))}: "
                         f"choose from {', '.join(POLICIES)} (comma separated or a list)")
    return tuple(names)


def diff_augment(x: Tensor, policy: str | Sequence[str] | None, generator: torch.Generator | None = None,
                 p: Probability = 1.0) -> Tensor:
    """``x`` (N, C, H, W) through each transformation of ``policy`` in turn, each applied to
    each image with probability ``p``; differentiable w.r.t. ``x``, any size >= 4 px, any dtype."""
    for name in parse_policy(policy):
        x = POLICIES[name](x, generator, p)
    return x


# --- the module's component --------------------------------------------------------------


class Augment(nn.Module):
    """``model.augment``: a policy, a fixed probability ``p`` or ADA's adaptive one.

    With ``ada_target`` the probability and the r_t statistics gathered since the last
    adjustment are buffers, so they are saved in checkpoints and a resumed run continues
    exactly; without it there is no state.
    """

    def __init__(self, policy: str | Sequence[str] | None = None, p: float = 1.0,
                 ada_target: float | None = None, ada_interval: int = 4, ada_kimg: float = 100.0) -> None:
        super().__init__()
        self.policy = parse_policy(policy)
        if not self.policy:
            raise ValueError("model.augment.policy is empty: name transformations (color, translation, "
                             "cutout) or set model.augment=null")
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"model.augment.p={p} must be in [0, 1]")
        if int(ada_interval) != ada_interval or ada_interval < 1:
            raise ValueError(f"model.augment.ada_interval={ada_interval} must be an integer >= 1")
        if not float(ada_kimg) > 0:
            raise ValueError(f"model.augment.ada_kimg={ada_kimg} must be positive")
        self.adaptive = ada_target is not None
        self.ada_target = None if ada_target is None else float(ada_target)
        self.ada_interval = int(ada_interval)
        self.ada_kimg = float(ada_kimg)
        self.fixed_p = float(p)
        if self.adaptive:  # ADA starts with no augmentation and adds it as the critic overfits
            self.register_buffer("p", torch.zeros(()))
            self.register_buffer("signs", torch.zeros(2))  # sum of sign(D(real)), images counted

    @property
    def probability(self) -> Probability:
        return self.p if self.adaptive else self.fixed_p

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.adaptive and self.fixed_p == 0.0:
            return images
        return diff_augment(images, self.policy, generator, self.probability)

    @torch.no_grad()
    def accumulate(self, sign_sum: Tensor, count: Tensor) -> None:
        """Add real scores' signs (summed over every rank: all ranks then keep the same ``p``)."""
        self.signs += torch.stack([sign_sum, count]).to(self.signs)

    @torch.no_grad()
    def adjust(self) -> Tensor:
        """ADA's update from the signs gathered since the last one: p += sign(r_t - target) x
        images / (ada_kimg x 1000), clamped to [0, 1]. Returns r_t."""
        sign_sum, count = self.signs
        r_t = sign_sum / count.clamp(min=1.0)
        step = count / (self.ada_kimg * 1000.0)
        self.p.copy_((self.p + torch.sign(r_t - self.ada_target) * step).clamp(0.0, 1.0))
        self.signs.zero_()
        return r_t

    def extra_repr(self) -> str:
        mode = f"ada_target={self.ada_target}, ada_interval={self.ada_interval}, ada_kimg={self.ada_kimg}" \
            if self.adaptive else f"p={self.fixed_p}"
        return f"policy={','.join(self.policy)}, {mode}"


def build_augment(config: dict[str, Any] | None) -> Augment | None:
    """``model.augment`` -> an :class:`Augment`, or None when it is null or its policy is."""
    config = dict(config or {})
    if not config or not config.get("policy"):
        return None
    allowed = {"policy", "p", "ada_target", "ada_interval", "ada_kimg"}
    unknown = set(config) - allowed
    if unknown:
        raise ValueError(f"model.augment has unknown keys {sorted(unknown)}: use {', '.join(sorted(allowed))}")
    return Augment(**config)
