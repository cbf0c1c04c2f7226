"""Diversity for one caption: does the generator draw many faces for a caption, or one?

For K captions the generator draws M faces each (different latents, same caption). Their
features (the attribute classifier's penultimate layer: no download needed) are compared
pairwise; the mean pairwise distance of a caption's faces, averaged over captions, is divided
by the same for real faces that show every attribute the caption mentions (up to M of them
per caption, drawn with a fixed seed). 1.0: as varied as real faces with those attributes;
0: the noise is ignored and each caption gets one face. An unconditional model is measured
the same way with one "caption" that mentions nothing (all its samples against random real
faces).

The same generated and matched real faces also give the conditional realism: SWD between
the faces generated for the captions and the real faces with the captions' attributes
(``swd_conditional``), next to the whole-set SWD.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["caption_groups", "diversity_ratio", "matching_reals", "mean_pairwise_distance"]


def mean_pairwise_distance(features: Tensor) -> Tensor:
    """Mean Euclidean distance over the distinct pairs of rows of (M, D); 0 with fewer than 2."""
    m = features.shape[0]
    if m < 2:
        return features.new_zeros((), dtype=torch.float64)
    d = torch.cdist(features.double()[None], features.double()[None])[0]
    return d.sum() / (m * (m - 1))


def matching_reals(targets: Tensor, attributes: Tensor, count: int, seed: int) -> list[list[int]]:
    """For each caption's targets (K, A; -1 = not mentioned), up to ``count`` rows of the real
    ``attributes`` (R, A) that have every mentioned value, drawn without replacement with a
    fixed seed: one list of row indices per caption."""
    mentioned = targets >= 0
    match = ((attributes[None] == targets[:, None]) | ~mentioned[:, None]).all(-1)  # (K, R)
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for row in match:
        rows = row.nonzero().flatten()
        pick = torch.randperm(len(rows), generator=gen)[:count]
        out.append(sorted(rows[pick].tolist()))
    return out


def caption_groups(num_captions: int, per_caption: int) -> Tensor:
    """(K * M,) the caption index of each generated face: faces of one caption are contiguous."""
    return torch.arange(num_captions).repeat_interleave(per_caption)


def diversity_ratio(fake_distance: Tensor, real_distance: Tensor, real_count: Tensor, min_real: int = 2
                    ) -> dict[str, Tensor]:
    """Per caption (K,), the mean pairwise distance of its generated faces and of its matched real
    faces, and how many real faces matched: ``{"diversity": mean fake / mean real distance,
    "diversity_fake", "diversity_real", "diversity_captions"}`` over the captions with at least
    ``min_real`` (>= 2) matching real faces (NaN when none has)."""
    use = real_count >= max(2, int(min_real))
    out = {"diversity_captions": use.sum().float()}
    if not use.any():
        nan = torch.tensor(float("nan"))
        return {**out, "diversity": nan, "diversity_fake": nan, "diversity_real": nan}
    fake_mean, real_mean = fake_distance[use].double().mean(), real_distance[use].double().mean()
    return {**out, "diversity": (fake_mean / real_mean.clamp_min(1e-12)).float(),
            "diversity_fake": fake_mean.float(), "diversity_real": real_mean.float()}
