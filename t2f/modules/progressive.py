"""What a progressively grown model adds to the base GAN module: stage, alpha, schedule."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from t2f.callbacks.progressive import ProgressiveSchedule
from t2f.nets.layers import downsample2x, upsample2x


def fade_real(images: Tensor, resolution: int, alpha: float) -> Tensor:
    """Real images at ``resolution``, blended during a fade-in exactly like the generator's
    output: ``lerp(upsample(downsample(x)), x, alpha)``."""
    factor = images.shape[-1] // resolution
    if factor * resolution != images.shape[-1]:
        raise ValueError(f"images of {images.shape[-1]}px cannot be reduced to {resolution}px")
    x = F.avg_pool2d(images, factor) if factor > 1 else images
    if alpha < 1.0:
        x = upsample2x(downsample2x(x)).lerp(x, alpha)
    return x


class ProgressiveMixin:
    """Mix into a GANModule before it: ``class M(ProgressiveMixin, GANModule)``.

    ``stage``/``alpha`` are set by the ProgressiveGrowing callback before each batch and are
    saved in checkpoints, so a loaded model samples at the resolution it had reached.
    """

    schedule: ProgressiveSchedule
    stage: int
    alpha: float

    def init_progressive(self, schedule: ProgressiveSchedule) -> None:
        """Start at the final stage: a model used without the callback samples at full size."""
        self.schedule = schedule
        self.stage = schedule.start_stage + len(schedule.resolutions) - 1
        self.alpha = 1.0

    @property
    def resolution(self) -> int:
        return 2 ** (self.stage + 2)

    def prepare_real(self, images: Tensor) -> Tensor:
        return fade_real(images, self.resolution, self.alpha)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["t2f"].update(stage=self.stage, alpha=self.alpha)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("t2f", {})
        self.stage = int(state.get("stage", self.stage))
        self.alpha = float(state.get("alpha", self.alpha))
