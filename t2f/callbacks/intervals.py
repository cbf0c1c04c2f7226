"""Intervals in images seen: callbacks fire when the counter crosses a multiple of N kimg."""

from __future__ import annotations


class KimgInterval:
    """Tracks the images-seen counter and says when it crossed the next multiple of ``every_kimg``.

    It starts from the counter it first sees, so a resumed run does not fire again for the
    interval it already fired for before it stopped.
    """

    def __init__(self, every_kimg: float) -> None:
        if every_kimg <= 0:
            raise ValueError(f"every_kimg={every_kimg} must be positive")
        self.every_images = every_kimg * 1000.0
        self.last: int | None = None

    def reset(self, images_seen: int) -> None:
        self.last = images_seen

    def crossed(self, images_seen: int) -> bool:
        last = images_seen if self.last is None else self.last
        self.last = images_seen
        return images_seen // self.every_images > last // self.every_images
