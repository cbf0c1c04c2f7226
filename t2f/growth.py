"""Progressive growing (ProGAN) as a pure function of images seen: no Lightning, no files.

A schedule is written per resolution, never per list position, so one config serves every
``dataset.resolution``: ``kimg``, ``batch_size`` and ``lr`` are each one number (every
resolution) or a mapping ``{resolution: value}`` in which a resolution that is not named takes
the value of the nearest named resolution below it. ``{4: 6, 8: 12, 16: 24, 32: 72}`` thus
gives 72 kimg to 64 px and to every larger resolution, which is ProGAN's and StyleGAN's own
rule of a fixed number of images per fade-in and per stable phase once the low resolutions
are done. Because ``at(kimg)`` depends on the images seen only, resuming anywhere (even in
the middle of a fade-in) lands on exactly the same stage and alpha.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from t2f.nets.layers import downsample2x, upsample2x

PerResolution = Mapping[Any, float] | float | int | None


@dataclass(frozen=True)
class StageState:
    stage: int
    resolution: int
    alpha: float


@dataclass(frozen=True)
class StagePlan:
    """One stage of a run's plan: where it starts and how long it fades in and stays stable."""

    stage: int
    resolution: int
    start_kimg: float
    fade_kimg: float
    stable_kimg: float
    batch_size: int | None  # None: the dataset's batch size
    lr: float | None  # None: the optimizers' own learning rates


def per_resolution(name: str, values: PerResolution, resolutions: list[int],
                   required: bool = False) -> list[float | None]:
    """One value per resolution from a number or a ``{resolution: value}`` mapping.

    A resolution not named takes the value of the nearest named one below it; one below every
    named resolution has none (None), which is an error when ``required``. Keys may be ints or
    strings (``'64'``, as a Hydra override ``model.schedule.kimg.64=40`` writes them).
    """
    if values is None:
        if required:
            raise ValueError(f"model.schedule.{name} is not set: give a number or {{resolution: value}}")
        return [None] * len(resolutions)
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        return [float(values)] * len(resolutions)
    if not isinstance(values, Mapping):
        raise ValueError(
            f"model.schedule.{name}={list(values) if isinstance(values, (list, tuple)) else values!r} must be "
            f"a number or a mapping from resolution to value, e.g. {{4: 6, 8: 12, 32: 72}} (resolutions not "
            f"named take the value of the nearest named one below them)"
        )
    named: dict[int, float] = {}
    for key, value in values.items():
        try:
            resolution = int(str(key).removesuffix("px"))
        except ValueError:
            raise ValueError(f"model.schedule.{name} has key {key!r}: keys are resolutions such as 4, 8, 64") from None
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(f"model.schedule.{name} names {key!r}, which is not a power-of-two resolution >= 4")
        if resolution in named and named[resolution] != value:
            raise ValueError(f"model.schedule.{name} gives {resolution} px twice ({named[resolution]} and {value})")
        named[resolution] = value
    out: list[float | None] = []
    for resolution in resolutions:
        below = [r for r in named if r <= resolution]
        if not below:
            if required:
                raise ValueError(
                    f"model.schedule.{name} names no resolution at or below {resolution} px "
                    f"(it names {', '.join(map(str, sorted(named)))}): add {resolution}: VALUE"
                )
            out.append(None)
            continue
        value = named[max(below)]
        out.append(None if value is None else float(value))
    return out


class ProgressiveSchedule:
    """Stages from ``start_resolution`` to ``max_resolution``; each stage after the first
    begins with a fade-in of ``fade_in_fraction`` of its length (T2F's 0.85; StyleGAN's 0.5
    gives equal fade-in and stable phases), during which alpha rises linearly from 0 to 1.

    Stage lengths are ``kimg`` per resolution, or ``epochs`` per resolution of a training set
    of ``images_per_epoch`` images (the original T2F's unit). ``batch_size`` and ``lr`` per
    resolution are optional (None: the dataset's batch size, the optimizers' rates).

    ``reset_optimizer``: clear the optimizers' state (Adam's moments) whenever a phase begins,
    a fade-in or a stable part (see :meth:`phase`), as the official ProGAN and StyleGAN training
    loops do (``reset_opt_for_new_lod=True``): moments gathered at the old resolution do not
    scale the first steps at the new one.
    """

    def __init__(
        self,
        max_resolution: int,
        kimg: PerResolution = None,
        start_resolution: int = 4,
        fade_in_fraction: float = 0.85,
        batch_size: PerResolution = None,
        lr: PerResolution = None,
        epochs: PerResolution = None,
        images_per_epoch: int | None = None,
        reset_optimizer: bool = False,
    ) -> None:
        for name, res in (("start_resolution", start_resolution), ("max_resolution", max_resolution)):
            if res < 4 or res & (res - 1):
                raise ValueError(f"schedule {name}={res} is not a power of two >= 4")
        if start_resolution > max_resolution:
            raise ValueError(
                f"model.schedule.start_resolution={start_resolution} is above the model's resolution "
                f"{max_resolution}: lower it or raise dataset.resolution"
            )
        self.start_stage = start_resolution.bit_length() - 3  # 4 px is stage 0
        self.resolutions = [2 ** (k + 2) for k in range(self.start_stage, max_resolution.bit_length() - 2)]
        if (kimg is None) == (epochs is None):
            raise ValueError("give the schedule's stage lengths as model.schedule.kimg or model.schedule.epochs "
                             "(one of them, the other null)")
        if epochs is not None:
            if not images_per_epoch:
                raise ValueError("model.schedule.epochs needs images_per_epoch (the training set size)")
            lengths = [e * images_per_epoch / 1000 for e in per_resolution("epochs", epochs, self.resolutions, True)]
        else:
            lengths = per_resolution("kimg", kimg, self.resolutions, required=True)
        if any(k <= 0 for k in lengths):
            raise ValueError(f"model.schedule.{'kimg' if epochs is None else 'epochs'} must be positive, got {lengths}")
        self.kimg_per_stage: list[float] = lengths
        if not 0.0 <= fade_in_fraction <= 1.0:
            raise ValueError(f"model.schedule.fade_in_fraction={fade_in_fraction} must be in [0, 1]")
        self.fade_in_fraction = float(fade_in_fraction)
        batch_sizes = per_resolution("batch_size", batch_size, self.resolutions)
        if any(b is not None and (b < 1 or b != int(b)) for b in batch_sizes):
            raise ValueError(f"model.schedule.batch_size must be positive integers, got {batch_size}")
        self.batch_sizes = [None if b is None else int(b) for b in batch_sizes]
        self.learning_rates = per_resolution("lr", lr, self.resolutions)
        if any(r is not None and r <= 0 for r in self.learning_rates):
            raise ValueError(f"model.schedule.lr must be positive, got {lr}")
        self.starts_kimg = [sum(self.kimg_per_stage[:i]) for i in range(len(self.resolutions))]
        self.total_kimg = sum(self.kimg_per_stage)
        self.reset_optimizer = bool(reset_optimizer)

    def at(self, kimg: float) -> StageState:
        index = max(i for i, start in enumerate(self.starts_kimg) if kimg >= start or i == 0)
        fade_kimg = self.fade_kimg(index)
        if fade_kimg == 0:
            alpha = 1.0
        else:
            alpha = min(1.0, (kimg - self.starts_kimg[index]) / fade_kimg)
        return StageState(self.start_stage + index, self.resolutions[index], alpha)

    @staticmethod
    def phase(state: StageState) -> tuple[int, bool]:
        """``(stage, fading)``: which part of the schedule a state is in. A new phase begins with
        every fade-in and every stable part (ProGAN's change of ``floor`` or ``ceil`` of the lod)."""
        return state.stage, state.alpha < 1.0

    def fade_kimg(self, index: int) -> float:
        """The fade-in of the stage at ``index``; the first stage has nothing to fade from."""
        return 0.0 if index == 0 else self.fade_in_fraction * self.kimg_per_stage[index]

    def stage_index(self, stage: int) -> int:
        return stage - self.start_stage

    def batch_size(self, stage: int) -> int | None:
        return self.batch_sizes[self.stage_index(stage)]

    def batch_size_at(self, images: int) -> int | None:
        """The batch size of the stage that ``images`` seen are in (None: the dataset's)."""
        return self.batch_size(self.at(images / 1000).stage)

    def learning_rate(self, stage: int) -> float | None:
        return self.learning_rates[self.stage_index(stage)]

    def plan(self) -> list[StagePlan]:
        """Every stage with its kimg, fade-in and stable phases, batch size and learning rate."""
        return [
            StagePlan(self.start_stage + i, res, self.starts_kimg[i], self.fade_kimg(i),
                      self.kimg_per_stage[i] - self.fade_kimg(i), self.batch_sizes[i], self.learning_rates[i])
            for i, res in enumerate(self.resolutions)
        ]


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
