"""What every face datamodule shares: batching, caption padding, vocabulary in checkpoints.

A dataset item is a dict with ``image`` (float 3xHxW in [-1, 1]) and, where the dataset
has them, ``caption`` (1-D LongTensor of token ids, BOS..EOS) and ``attributes``
(LongTensor). ``collate_faces`` pads captions and adds ``caption_length``.

Training reads images in an order that is a pure function of the run's seed, the epoch, the
rank and the images trained so far (:class:`ImageStream`), so a resumed run, even one stopped
mid-epoch, reads exactly what the uninterrupted run would have read.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from t2f.data.attributes import AttributeTask
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


class ImageStream(Sampler[tuple[int, int]]):
    """The order training reads images in, as ``(index, item seed)`` keys for :class:`SeededItems`.

    Epoch after epoch, each a permutation of the ``size`` training images drawn from
    ``(seed, epoch)`` together with a seed per image for its own random choices, dealt out to
    ``world_size`` ranks like DistributedSampler (rank r takes slots r, r + W, ...; the last
    ``size mod W`` images of an epoch sit out). One pass reads one epoch's worth from
    ``position()``, the images this rank has trained on: a loader built or restarted anywhere (a
    resume mid-epoch, a reload for a stage's batch size) continues exactly where training is,
    with nothing to save but the images-seen counter, and batches may span two epochs. Without
    ``position`` (a loader used outside training) pass k reads epoch k.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1,
                 position: Callable[[], int] | None = None) -> None:
        self.size, self.seed, self.position = int(size), int(seed), position
        self.rank, self.world_size = int(rank), int(world_size)
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None  # the epoch read last
        self._passes = 0

    def __len__(self) -> int:
        return self.size // self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start = self.begin_pass()  # read now, when the pass begins, not at its first item
        return (self.at(p) for p in range(start, start + len(self)))

    def next_start(self) -> int:
        """Where the next pass begins: the images trained (or, without ``position``, pass k at epoch k)."""
        return self.position() if self.position is not None else self._passes * len(self)

    def begin_pass(self) -> int:
        start = self.next_start()
        self._passes += 1
        return start

    def at(self, position: int) -> tuple[int, int]:
        """The key this rank reads after ``position`` images."""
        epoch, offset = divmod(position, len(self))
        order, seeds = self._permutation(epoch)
        slot = offset * self.world_size + self.rank
        return int(order[slot]), int(seeds[slot])

    def _permutation(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng([self.seed % 2**64, epoch])
            self._epoch = (epoch, rng.permutation(self.size), rng.integers(2**63, size=self.size))
        return self._epoch[1], self._epoch[2]


class ScheduledBatches(Sampler[list[tuple[int, int]]]):
    """One pass of an :class:`ImageStream` in batches whose size a rule gives per batch.

    ``batch_size(images)`` is the per-process batch size once ``images`` have been trained on
    by all processes together (a growth schedule's batch size for its stage there). It is a
    pure function of the stream's position, so the sizes do not depend on when a batch is
    prefetched, and a new stage's batch size takes effect at its first batch, without ending
    the epoch or rebuilding the loader. A pass stops before the batch that would run past
    its images; the next pass begins there.
    """

    def __init__(self, stream: ImageStream, batch_size: Callable[[int], int]) -> None:
        self.stream, self.batch_size = stream, batch_size

    def _batches(self, start: int) -> Iterator[tuple[int, int]]:
        """``(position, size)`` of each batch of the pass that begins at ``start``."""
        position, end = start, start + len(self.stream)
        while True:
            size = int(self.batch_size(position * self.stream.world_size))
            if position + size > end:
                return
            yield position, size
            position += size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for position, size in self._batches(self.stream.begin_pass()):
            yield [self.stream.at(p) for p in range(position, position + size)]

    def __len__(self) -> int:
        return sum(1 for _ in self._batches(self.stream.next_start()))


class SeededItems(Dataset):
    """A dataset read with :class:`ImageStream`'s ``(index, seed)`` keys.

    An item's random choices (a flip, which of its captions) come from torch's default
    generator seeded with the key's seed, whose state is put back afterwards: they depend on
    the sample order alone, not on when the item is loaded (prefetching, workers, a resume),
    and loading never changes what training draws next.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        state = torch.get_rng_state()
        torch.default_generator.manual_seed(seed)  # the CPU one: torch.manual_seed seeds every device, ~300 us
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(state)


def leave_stops_to_the_main_process(_worker_id: int) -> None:
    """A loader worker ignores Ctrl-C and SIGTERM. Both often reach the whole process group or job
    (a terminal's Ctrl-C, SLURM's time limit and scancel, ``timeout``, systemd): a worker that died
    of SIGTERM made the main process fail inside a step, with a traceback and a checkpoint of half
    a step, where it should stop after the batch and say how to resume. The main process shuts its
    workers down, and they exit by themselves when it dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StreamLoader(DataLoader):
    """The training loader over an :class:`ImageStream`; resumable in Lightning's terms, but it
    resumes by itself (the stream reads the images seen), so the state it saves only names the
    order, and a resume that would read another one (another seed, training set or number of
    processes) says so."""

    @property
    def stream(self) -> ImageStream:
        return self.batch_sampler.stream

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.stream.seed, "images": self.stream.size, "ranks": self.stream.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state != self.state_dict():
            rank_zero_warn(f"the training images are read in another order than before the resume "
                           f"(seed, training set size and processes then: {state}, now: {self.state_dict()}): "
                           "resume with the run's own seed, dataset and devices to continue it exactly")


class FaceDataModule(pl.LightningDataModule):
    """Base datamodule: subclasses fill ``self.train_set``/``self.val_set`` in ``build``."""

    def __init__(
        self,
        resolution: int = 32,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | str = "auto",
        max_resolution: int = 128,
        max_images: int | None = None,
    ) -> None:
        super().__init__()
        self.resolution = check_resolution(int(resolution), high=max_resolution)
        if batch_size < 1:
            raise ValueError(f"dataset.batch_size={batch_size} must be a positive integer")
        self.batch_size = int(batch_size)
        if int(num_workers) < 0:
            raise ValueError(f"dataset.num_workers={num_workers} must be >= 0 (0: load in the training process)")
        self.num_workers = int(num_workers)
        if pin_memory not in (True, False, "auto"):
            raise ValueError(f"dataset.pin_memory={pin_memory!r} must be true, false or auto (pinned when training on a GPU)")
        self.pin_memory = pin_memory
        if max_images is not None and (int(max_images) != max_images or max_images < 1):
            raise ValueError(f"dataset.max_images={max_images} must be a positive integer (or null: all)")
        # a small-data experiment: train on a fixed random subset (+dataset.max_images=N); private,
        # so that datamodules without it keep their metric fingerprints (t2f.metrics.suite)
        self._max_images = None if max_images is None else int(max_images)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.vocab: Vocabulary | None = None
        self._restored_vocab: Vocabulary | None = None
        self._order_seed = 0  # the run's seed (set_order_seed), not the dataset's own
        self._batch_schedule: Callable[[int], int | None] | None = None  # set_batch_schedule

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

    def attribute_task(self) -> AttributeTask | None:
        """The attributes captions mention and how to read them (for alignment and diversity);
        None where the dataset has none."""
        return None

    def held_out_set(self) -> Dataset:
        """Every image training never sees (for measuring against real faces): the validation
        split here; datasets with more held-out images (CelebA's test partition) return those too."""
        self.setup()
        return self.val_set

    def set_batch_schedule(self, batch_size: Callable[[int], int | None] | None) -> None:
        """Training batches take their per-process size from ``batch_size(images seen by all
        processes)`` (a growth schedule's per-stage batch size; None there: ``dataset.batch_size``);
        ``None`` restores ``dataset.batch_size`` throughout."""
        self._batch_schedule = batch_size

    def training_batch_size(self, images: int) -> int:
        """The per-process batch size of the training batch that begins after ``images``."""
        size = self._batch_schedule(images) if self._batch_schedule is not None else None
        return self.batch_size if size is None else int(size)

    def set_order_seed(self, seed: int) -> None:
        """The run's ``seed`` orders the training images (RankSeed passes it at fit start)."""
        self._order_seed = int(seed)

    def _images_trained(self) -> int:
        """Images this rank has trained on (the module counts them over all ranks): where its
        sample order goes on."""
        module = self.trainer.lightning_module
        return int(getattr(module, "images_seen", 0)) // self.trainer.world_size

    def train_dataloader(self) -> StreamLoader:
        self.setup("fit")
        if len(self.train_set) < self.batch_size:
            raise ValueError(
                f"the training set has {len(self.train_set)} images, fewer than one batch "
                f"(dataset.batch_size={self.batch_size}): lower the batch size or add images"
            )
        if self.trainer is not None:
            order = ImageStream(len(self.train_set), self._order_seed, self.trainer.global_rank,
                                self.trainer.world_size, self._images_trained)
        else:
            order = ImageStream(len(self.train_set), self._order_seed)
        return StreamLoader(
            SeededItems(self.train_set),
            batch_sampler=ScheduledBatches(order, self.training_batch_size),
            num_workers=self.num_workers,
            pin_memory=self._pin(),
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_faces,
            worker_init_fn=leave_stops_to_the_main_process,
            # the workers' base seed is drawn from this, not from training's generator
            generator=torch.Generator().manual_seed(self._order_seed),
        )

    def _pin(self) -> bool:
        """Pinned batches let Lightning's non-blocking copy to the GPU overlap the step."""
        if self.pin_memory != "auto":
            return bool(self.pin_memory)
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    # The vocabulary travels with checkpoints so generation maps words to the same ids.
    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab.state_dict() if self.vocab is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("vocab") is not None:
            self._restored_vocab = Vocabulary.from_state_dict(state["vocab"])
