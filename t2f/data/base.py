"""What every face datamodule shares: batching, caption padding, vocabulary in checkpoints.

A dataset item is a dict with ``image`` (float 3xHxW in [-1, 1]) and, where the dataset
has them, ``caption`` (1-D LongTensor of token ids, BOS..EOS) and ``attributes``
(LongTensor). ``collate_faces`` pads captions and adds ``caption_length``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from t2f.data.vocab import Vocabulary, pad_captions


def collate_faces(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    batch: dict[str, Any] = {"image": torch.stack([it["image"] for it in items])}
    if "caption" in items[0]:
        batch["caption"], batch["caption_length"] = pad_captions([it["caption"] for it in items])
    if "attributes" in items[0]:
        batch["attributes"] = torch.stack([it["attributes"] for it in items])
    return batch


def check_resolution(resolution: int, low: int = 8, high: int = 1024) -> int:
    """Resolutions are powers of two; say which ones when the config asks for another."""
    valid = [2**k for k in range(low.bit_length() - 1, high.bit_length())]
    if resolution not in valid:
        raise ValueError(
            f"dataset.resolution={resolution} is not a power of two between {low} and {high}: "
            f"choose one of {', '.join(map(str, valid))}"
        )
    return resolution


class LimitedSet(Subset):
    """A fixed subset of a training set that still answers for the set's own attributes
    (e.g. ``captions``, which datamodules read to sample caption grids)."""

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling in a worker): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


def limit_images(dataset: Dataset, max_images: int | None, seed: int = 0) -> Dataset:
    """``max_images`` samples of ``dataset`` drawn once with a fixed seed (in their order), so
    that every run with the same ``dataset.max_images`` trains on the same images; the whole
    set when it has no more than that."""
    if max_images is None or len(dataset) <= max_images:
        return dataset
    rows = np.sort(np.random.default_rng(seed).choice(len(dataset), size=max_images, replace=False))
    return LimitedSet(dataset, rows.tolist())


class FaceDataModule(pl.LightningDataModule):
    """Base datamodule: subclasses fill ``self.train_set``/``self.val_set`` in ``build``."""

    def __init__(
        self,
        resolution: int = 32,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        max_resolution: int = 128,
        max_images: int | None = None,
    ) -> None:
        super().__init__()
        self.resolution = check_resolution(int(resolution), high=max_resolution)
        if batch_size < 1:
            raise ValueError(f"dataset.batch_size={batch_size} must be a positive integer")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        if max_images is not None and (int(max_images) != max_images or max_images < 1):
            raise ValueError(f"dataset.max_images={max_images} must be a positive integer (or null: all)")
        # a small-data experiment: train on a fixed random subset (+dataset.max_images=N); private,
        # so that datamodules without it keep their metric fingerprints (t2f.metrics.suite)
        self._max_images = None if max_images is None else int(max_images)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.vocab: Vocabulary | None = None
        self._restored_vocab: Vocabulary | None = None

    # --- subclass API ---------------------------------------------------------------------
    def build(self) -> None:
        """Create ``train_set`` and ``val_set`` (and ``vocab`` for captioned datasets)."""
        raise NotImplementedError

    @property
    def has_captions(self) -> bool:
        return self.vocab is not None

    def sample_captions(self, n: int, seed: int = 0) -> list[str]:
        """Fixed validation captions, e.g. for sample grids of text-conditional models."""
        raise NotImplementedError(f"{type(self).__name__} has no captions")

    # --- Lightning hooks --------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.build()
            self.train_set = limit_images(self.train_set, self._max_images)
            if self._restored_vocab is not None and self.vocab != self._restored_vocab:
                raise RuntimeError(
                    "the dataset's vocabulary differs from the one in the checkpoint: resume "
                    "with the same dataset and caption settings the run was started with"
                )

    def held_out_set(self) -> Dataset:
        """Every image training never sees (for measuring against real faces): the validation
        split here; datasets with more held-out images (CelebA's test partition) return those too."""
        self.setup()
        return self.val_set

    def set_batch_size(self, batch_size: int) -> None:
        """Progressive training changes the batch size per stage; Lightning then reloads."""
        self.batch_size = int(batch_size)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_faces,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        if len(self.train_set) < self.batch_size:
            raise ValueError(
                f"the training set has {len(self.train_set)} images, fewer than one batch "
                f"(dataset.batch_size={self.batch_size}): lower the batch size or add images"
            )
        return self._loader(self.train_set, shuffle=True)

    # The vocabulary travels with checkpoints so generation maps words to the same ids.
    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab.state_dict() if self.vocab is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("vocab") is not None:
            self._restored_vocab = Vocabulary.from_state_dict(state["vocab"])
