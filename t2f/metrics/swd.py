"""Multi-scale sliced Wasserstein distance (SWD), the protocol of ProGAN (Karras et al. 2018).

A port of ``metrics/sliced_wasserstein.py`` from tkarras/progressive_growing_of_gans:

1. Images go to uint8 [0, 255] (as ProGAN fed them) and then float32; a Laplacian pyramid is
   built with the 5x5 binomial kernel ``[1, 4, 6, 4, 1] / 16`` (``cv2.pyrDown``/``pyrUp``,
   mirror borders). Levels: the full resolution, then halving while the level is >= 16 px; the
   last level is the low-pass residual.
2. From every level of every image, 128 random 7x7 neighbourhoods (all channels) are taken.
3. Per level, each descriptor set (real, fake) is normalised per channel by its own mean and std.
4. Sliced Wasserstein distance: 4 repeats of 128 random unit directions; project, sort, mean
   absolute difference; averaged over directions and repeats. Reported x1e3 per level
   (``swd_x1e3_<res>``) and their mean (``swd_x1e3_avg``), as in the paper's tables.

Two deviations, both so that *the same protocol always gives the same number*:

- patch positions are a deterministic hash of (image content, seed, level, patch index), not
  a global RNG draw, so a set of images yields the same descriptors whatever the batching, the
  order, or the number of DDP processes that saw it (and identical sets give exactly 0);
- projection directions come from a ``torch.Generator`` seeded with ``seed``.

When the real and fake sets differ in size, the sorted projections are compared at matching
quantiles (ProGAN required equal sizes; with equal sizes this is exactly ProGAN's formula).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from t2f.metrics.common import dist_rank_world, full_precision, to_uint8

__all__ = [
    "SlicedWassersteinDistance",
    "extract_descriptors",
    "laplacian_pyramid",
    "pyramid_resolutions",
    "sliced_wasserstein_distance",
    "swd_from_descriptors",
]

_MASK31 = 0x7FFFFFFF
_HASH_MUL = 0x45D9F3B  # < 2**27, so (x < 2**31) * mul stays far inside int64


def _gaussian_kernel(channels: int, device: torch.device, scale: float = 1.0) -> Tensor:
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device)
    k2 = torch.outer(k1, k1) / 256.0 * scale
    return k2.expand(channels, 1, 5, 5).contiguous()


def _pyr_down(x: Tensor) -> Tensor:
    """Blur (mirror borders) and take every second pixel: ``cv2.pyrDown``."""
    kernel = _gaussian_kernel(x.shape[1], x.device)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])[:, :, ::2, ::2]


def _pyr_up(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero-insert to twice the size and blur with 4x the kernel: ``cv2.pyrUp``, cropped to size."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    kernel = _gaussian_kernel(c, x.device, scale=4.0)
    out = F.conv2d(F.pad(up, (2, 2, 2, 2), mode="reflect"), kernel, groups=c)
    return out[:, :, : size[0], : size[1]]


def pyramid_resolutions(height: int, width: int | None = None, min_resolution: int = 16) -> list[int]:
    """The level resolutions ProGAN reports for an image size: res, res/2, ... down to >= 16."""
    res = min(height, width if width is not None else height)
    if res < min_resolution:
        raise ValueError(
            f"SWD needs images of at least {min_resolution}x{min_resolution} px (ProGAN's smallest "
            f"pyramid level); got {height}x{width if width is not None else height}"
        )
    levels = []
    while res >= min_resolution:
        levels.append(res)
        res //= 2
    return levels


def laplacian_pyramid(images: Tensor, num_levels: int) -> list[Tensor]:
    """Laplacian pyramid of float images (N, C, H, W); the last level is the low-pass residual."""
    pyramid = [images]
    for _ in range(1, num_levels):
        pyramid.append(_pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - _pyr_up(pyramid[-1], pyramid[-2].shape[-2:])
    return pyramid


def _mix(x: Tensor) -> Tensor:
    """A 31-bit integer hash (int64 arithmetic, exact on every device)."""
    x = ((x >> 16) ^ x) * _HASH_MUL & _MASK31
    x = ((x >> 16) ^ x) * _HASH_MUL & _MASK31
    return (x >> 16) ^ x


def _image_hashes(images: Tensor) -> Tensor:
    """One 31-bit hash per uint8 image, from an exact integer weighted sum of its pixels."""
    flat = images.reshape(images.shape[0], -1).long()
    weights = (_mix(torch.arange(1, flat.shape[1] + 1, device=images.device)) & 0xFFFFF) + 1  # < 2**20
    total = (flat * weights).sum(dim=1)  # < 2**8 * 2**20 * numel: exact in int64 up to 4096^2 RGB
    return _mix((total & _MASK31) ^ ((total >> 31) & _MASK31))


def extract_descriptors(
    images: Tensor,
    patches_per_image: int = 128,
    patch_size: int = 7,
    seed: int = 0,
    min_resolution: int = 16,
) -> Tensor:
    """Patch descriptors of a batch: (N, levels, patches_per_image, C * patch_size**2), float32.

    ``images`` are floats in [-1, 1] (or uint8). Patch positions depend only on each image's
    content, ``seed``, the level and the patch index (see the module docstring).
    """
    images = to_uint8(images)
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    levels = pyramid_resolutions(h, w, min_resolution)
    if min(h, w) >> (len(levels) - 1) < patch_size:
        raise ValueError(f"patch_size {patch_size} does not fit the smallest level of {h}x{w} images")
    device = images.device
    with full_precision(device):
        pyramid = laplacian_pyramid(images.float(), len(levels))
        hashes = _image_hashes(images)  # (N,)
        offsets = torch.arange(patch_size, device=device)
        channel = torch.arange(c, device=device)[None, None, :, None, None]
        batch = torch.arange(n, device=device)[:, None, None, None, None]
        out = []
        for lod, level in enumerate(pyramid):
            base = ((lod << 16) + ((seed * 7919) << 20)) & _MASK31
            salt = _mix((torch.arange(patches_per_image, device=device) + base) & _MASK31)
            key = _mix((hashes[:, None] + salt[None, :]) & _MASK31)  # (N, P)
            key2 = _mix(key ^ 0x5BD1E995)
            hl, wl = level.shape[-2:]
            top = key % (hl - patch_size + 1)
            left = key2 % (wl - patch_size + 1)
            ys = (top[:, :, None] + offsets)[:, :, None, :, None]  # (N, P, 1, ps, 1)
            xs = (left[:, :, None] + offsets)[:, :, None, None, :]  # (N, P, 1, 1, ps)
            patches = level[batch, channel, ys, xs]  # (N, P, C, ps, ps)
            out.append(patches.reshape(n, patches_per_image, -1))
        return torch.stack(out, dim=1)


def _normalise(desc: Tensor, channels: int) -> Tensor:
    """ProGAN's ``finalize_descriptors``: per-channel mean/std over the whole set, then flatten."""
    d = desc.reshape(desc.shape[0], channels, -1).double()
    mean = d.mean(dim=(0, 2), keepdim=True)
    std = d.std(dim=(0, 2), keepdim=True, correction=0).clamp_min(1e-12)
    return ((d - mean) / std).float().reshape(desc.shape[0], -1)


def _quantile_cols(sorted_proj: Tensor, n: int) -> Tensor:
    """n columns of a (dirs, M) tensor sorted along M, at evenly spaced quantiles (identity if M == n)."""
    m = sorted_proj.shape[1]
    if m == n:
        return sorted_proj
    idx = ((torch.arange(n, device=sorted_proj.device, dtype=torch.float64) + 0.5) * m / n).long()
    return sorted_proj[:, idx.clamp_max(m - 1)]


def _sliced_wasserstein(a: Tensor, b: Tensor, dir_repeats: int, dirs_per_repeat: int,
                        generator: torch.Generator) -> float:
    """ProGAN's ``sliced_wasserstein`` on two (M, D) descriptor sets, in chunks of directions."""
    n = min(a.shape[0], b.shape[0])
    chunk = max(1, min(dirs_per_repeat, (1 << 25) // max(a.shape[0], b.shape[0], 1)))
    results = []
    for _ in range(dir_repeats):
        dirs = torch.randn(a.shape[1], dirs_per_repeat, generator=generator, dtype=torch.float64)
        dirs = (dirs / dirs.square().sum(dim=0, keepdim=True).sqrt()).float().to(a.device)
        total = 0.0
        for start in range(0, dirs_per_repeat, chunk):
            d = dirs[:, start:start + chunk].T.contiguous()  # (dirs, D): sort along contiguous rows
            proj_a = _quantile_cols(torch.sort(d @ a.T, dim=1).values, n)
            proj_b = _quantile_cols(torch.sort(d @ b.T, dim=1).values, n)
            total += float((proj_a - proj_b).abs().sum(dtype=torch.float64))
        results.append(total / (n * dirs_per_repeat))
    return sum(results) / len(results)


def swd_from_descriptors(
    real: Tensor,
    fake: Tensor,
    resolutions: list[int] | None = None,
    dir_repeats: int = 4,
    dirs_per_repeat: int = 128,
    seed: int = 0,
    channels: int = 3,
) -> dict[str, float]:
    """SWD x1e3 per level and averaged, from descriptors shaped like ``extract_descriptors`` output."""
    if real.dim() != 4 or fake.dim() != 4 or real.shape[1:] != fake.shape[1:]:
        raise ValueError(
            f"real and fake descriptors must be (N, levels, patches, dim) with equal trailing shape; "
            f"got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    if real.shape[0] < 1 or fake.shape[0] < 1:
        raise ValueError("SWD needs at least one real and one fake image")
    num_levels = real.shape[1]
    if resolutions is None:
        resolutions = list(range(num_levels))
    if len(resolutions) != num_levels:
        raise ValueError(f"{len(resolutions)} resolutions given for {num_levels} pyramid levels")
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    with full_precision(real.device):
        for lod, res in enumerate(resolutions):
            a = _normalise(real[:, lod].reshape(-1, real.shape[-1]), channels)
            b = _normalise(fake[:, lod].reshape(-1, fake.shape[-1]), channels)
            out[f"swd_x1e3_{res}"] = 1e3 * _sliced_wasserstein(a, b, dir_repeats, dirs_per_repeat, generator)
    out["swd_x1e3_avg"] = sum(out.values()) / len(out)
    return out


def sliced_wasserstein_distance(
    real: Tensor,
    fake: Tensor,
    patches_per_image: int = 128,
    patch_size: int = 7,
    dir_repeats: int = 4,
    dirs_per_repeat: int = 128,
    min_resolution: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """ProGAN's multi-scale SWD between two image sets (N, C, H, W) in [-1, 1] (or uint8).

    Returns ``{"swd_x1e3_<res>": ..., "swd_x1e3_avg": ...}`` with one entry per pyramid level
    (full resolution down to 16 px).
    """
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real and fake images differ in shape: {tuple(real.shape)} vs {tuple(fake.shape)}")
    kw = dict(patches_per_image=patches_per_image, patch_size=patch_size, seed=seed,
              min_resolution=min_resolution)
    return swd_from_descriptors(
        extract_descriptors(real, **kw),
        extract_descriptors(fake, **kw),
        resolutions=pyramid_resolutions(real.shape[-2], real.shape[-1], min_resolution),
        dir_repeats=dir_repeats,
        dirs_per_repeat=dirs_per_repeat,
        seed=seed,
        channels=real.shape[1],
    )


class SlicedWassersteinDistance(Metric):
    """ProGAN's multi-scale SWD as a torchmetrics ``Metric`` (DDP: update and compute on every rank).

    ``update(images, real)`` turns each batch into patch descriptors right away (the images
    are not kept): about ``levels * patches_per_image * C * patch_size**2 * 4`` bytes per image
    (75 KB per level with the defaults). The states are ``cat``-reduced, and descriptors depend
    only on image content, so ``compute()`` gives the same numbers on one process and on any
    number of DDP processes that together saw the same images.

    ``compute()`` returns ``{"swd_x1e3_<res>": tensor, ..., "swd_x1e3_avg": tensor}``.

    Real-side states can be exported with ``real_statistics()`` (call on every rank) and put
    back with ``load_real_statistics()``, for the on-disk cache of ``t2f.metrics.protocol``.
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    real_descriptors: list[Tensor] | Tensor
    fake_descriptors: list[Tensor] | Tensor

    def __init__(
        self,
        patches_per_image: int = 128,
        patch_size: int = 7,
        dir_repeats: int = 4,
        dirs_per_repeat: int = 128,
        min_resolution: int = 16,
        seed: int = 0,
        reset_real_features: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in [("patches_per_image", patches_per_image), ("patch_size", patch_size),
                            ("dir_repeats", dir_repeats), ("dirs_per_repeat", dirs_per_repeat),
                            ("min_resolution", min_resolution)]:
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"SlicedWassersteinDistance: {name} must be a positive int, got {value!r}")
        self.patches_per_image = patches_per_image
        self.patch_size = patch_size
        self.dir_repeats = dir_repeats
        self.dirs_per_repeat = dirs_per_repeat
        self.min_resolution = min_resolution
        self.seed = int(seed)
        self.reset_real_features = bool(reset_real_features)
        self.add_state("real_descriptors", default=[], dist_reduce_fx="cat")
        self.add_state("fake_descriptors", default=[], dist_reduce_fx="cat")
        self._image_shape: tuple[int, int, int] | None = None

    @property
    def feature_extractor_id(self) -> str:
        """Everything that determines the real descriptors, for ``Protocol.feature_extractor``."""
        return (f"swd-laplacian-p{self.patches_per_image}-k{self.patch_size}"
                f"-min{self.min_resolution}-seed{self.seed}")

    def update(self, images: Tensor, real: bool) -> None:
        """Add a batch of images (N, C, H, W) in [-1, 1] (or uint8) to the real or fake set."""
        if images.dim() != 4:
            raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
        shape = tuple(images.shape[1:])
        if self._image_shape is not None and shape != self._image_shape:
            raise ValueError(
                f"SWD got images of shape {shape} after {self._image_shape}; one metric instance "
                "compares one resolution (reset it, or use one instance per resolution)"
            )
        self._image_shape = shape
        desc = extract_descriptors(images, self.patches_per_image, self.patch_size, self.seed,
                                   self.min_resolution)
        (self.real_descriptors if real else self.fake_descriptors).append(desc)

    def compute(self) -> dict[str, Tensor]:
        real = dim_zero_cat(self.real_descriptors) if _nonempty(self.real_descriptors) else None
        fake = dim_zero_cat(self.fake_descriptors) if _nonempty(self.fake_descriptors) else None
        if real is None or fake is None or real.numel() == 0 or fake.numel() == 0:
            raise RuntimeError("SlicedWassersteinDistance.compute() needs real and fake images; update() with both")
        if self._image_shape is None:  # states came only from load_real_statistics + sync
            raise RuntimeError("SlicedWassersteinDistance: no fake images on this rank")
        _, h, w = self._image_shape
        values = swd_from_descriptors(
            real, fake, pyramid_resolutions(h, w, self.min_resolution), self.dir_repeats,
            self.dirs_per_repeat, self.seed, channels=self._image_shape[0],
        )
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}

    def reset(self) -> None:
        if self.reset_real_features:
            super().reset()
            self._image_shape = None
            return
        value = self._defaults.pop("real_descriptors")
        try:
            super().reset()
        finally:
            self._defaults["real_descriptors"] = value

    def real_statistics(self) -> dict[str, Tensor]:
        """The real descriptors of all ranks (a collective call under DDP), on the CPU."""
        with self.sync_context(should_sync=self.sync_on_compute, should_unsync=True):
            desc = self.real_descriptors
            desc = dim_zero_cat(desc) if _nonempty(desc) else torch.empty(0)
            return {"real_descriptors": desc.detach().cpu().clone()}

    def load_real_statistics(self, stats: Mapping[str, Tensor]) -> None:
        """Replace the real-side state with ``real_statistics()`` output (rank 0 holds it all)."""
        desc = stats["real_descriptors"]
        if desc.dim() != 4:
            raise ValueError(f"real_descriptors must be (N, levels, patches, dim); got {tuple(desc.shape)}")
        rank, _ = dist_rank_world()
        if rank != 0:  # others hold an empty slice of the same shape, so gathering works
            desc = desc[:0]
        self.real_descriptors = [desc.to(self.device)]
        self._computed = None


def _nonempty(state: list[Tensor] | Tensor) -> bool:
    return len(state) > 0 if isinstance(state, list) else True
