"""What a progressively grown model adds to the base GAN module: stage, alpha, schedule."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from t2f.growth import ProgressiveSchedule, fade_real


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
