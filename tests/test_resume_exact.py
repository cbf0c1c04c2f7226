"""Issue 17, item 7: a run interrupted (Ctrl-C) and resumed, at an epoch boundary, mid-epoch, mid-fade
and at a stage switch that changes the batch size, ends bit for bit where the uninterrupted run
ends (CPU, ``trainer.deterministic=true``): weights, buffers, optimizer states and random states."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from t2f.callbacks.rng import rng_untouched
from t2f.data.base import ImageStream, ScheduledBatches, StreamLoader
from t2f.train import train
from tests.conftest import compose_config

pytestmark = pytest.mark.usefixtures("one_thread")

# 32 training images (4 batches of 8 per epoch) of the faces the other tests render; small sample grids
EXACT = ["trainer.deterministic=true", "+dataset.max_images=32", "callbacks.samples.num_samples=4"]


class _InterruptAt(pl.Callback):
    """Ctrl-C right after the batch that brings the images seen to ``images``."""

    def __init__(self, images: int) -> None:
        self.images = images

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if pl_module.images_seen == self.images:
            raise KeyboardInterrupt


class _CtrlCInsideStep(pl.Callback):
    """A real SIGINT in the middle of the step that starts at ``images`` seen: between the critic's
    backward pass and its optimizer step."""

    def __init__(self, images: int) -> None:
        self.images, self.sent = images, False

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if pl_module.images_seen == self.images and not self.sent:  # once: a second Ctrl-C stops at once
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def _train_until_done(run: Path, model: str, overrides: list[str], stops: list[int],
                      interrupt: type[pl.Callback] = _InterruptAt) -> dict[str, Any]:
    """Train in ``run``, interrupted at each of ``stops`` images and resumed; the final checkpoint."""
    sigint = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT after a Ctrl-C
    try:
        for images in stops:
            with pytest.raises(SystemExit):
                train(compose_config(run, overrides, model=model), extra_callbacks=[interrupt(images)])
    finally:
        signal.signal(signal.SIGINT, sigint)
    train(compose_config(run, overrides, model=model))
    return torch.load(run / "run" / "checkpoints" / "last.ckpt", weights_only=True)


def _assert_identical(a: Any, b: Any, where: str = "checkpoint") -> None:
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys differ"
        for key in a:
            _assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _assert_same_run(straight: dict[str, Any], resumed: dict[str, Any], images: int) -> None:
    assert straight["t2f"]["images_seen"] == resumed["t2f"]["images_seen"] == images
    _assert_identical(straight["state_dict"], resumed["state_dict"], "state_dict")
    _assert_identical(straight["optimizer_states"], resumed["optimizer_states"], "optimizer_states")
    rng = next(k for k in straight["callbacks"] if k.startswith("RankSeed"))
    _assert_identical(straight["callbacks"][rng], resumed["callbacks"][rng], "random states")


@pytest.mark.parametrize("model, overrides, stops, images", [
    # 8 batches of 8 in two epochs: stopped at the epoch boundary, then in the middle of the second
    ("dcgan", ["model.total_kimg=0.064"], [32, 48], 64),
    # 4 -> 8 -> 16 -> 32 px, batches of 4 from 16 px on: stopped at the switch to 16 px (a new
    # batch size, from the same loader), then mid-epoch while 16 px fades in
    ("t2f", ["model.schedule.batch_size={4: 8, 16: 4}"], [32, 40], 80),
])
def test_a_resumed_run_equals_the_uninterrupted_one_bit_for_bit(tmp_path_factory, model, overrides, stops,
                                                               images) -> None:
    overrides = [*EXACT, *overrides]
    straight = _train_until_done(tmp_path_factory.mktemp(f"{model}_straight"), model, overrides, [])
    resumed = _train_until_done(tmp_path_factory.mktemp(f"{model}_resumed"), model, overrides, stops)
    _assert_same_run(straight, resumed, images)


def test_a_ctrl_c_inside_a_step_stops_after_it_and_resumes_bit_for_bit(tmp_path_factory) -> None:
    """Python raises KeyboardInterrupt wherever SIGINT lands; StopBetweenBatches finishes the step."""
    overrides = [*EXACT, "model.total_kimg=0.064"]
    straight = _train_until_done(tmp_path_factory.mktemp("ctrlc_straight"), "dcgan", overrides, [])
    resumed = _train_until_done(tmp_path_factory.mktemp("ctrlc_resumed"), "dcgan", overrides, [40],
                                interrupt=_CtrlCInsideStep)
    _assert_same_run(straight, resumed, 64)


def test_the_sample_order_is_a_function_of_seed_epoch_rank_and_position() -> None:
    """Each epoch a fresh permutation of (seed, epoch), split between ranks; any position starts
    where a stream read from the beginning is at that point."""
    def stream(seed: int, rank: int = 0, world: int = 1, at: int = 0) -> list[tuple[int, int]]:
        return list(ImageStream(10, seed, rank, world, position=lambda: at))

    whole = stream(0) + stream(0, at=10)
    assert sorted(i for i, _ in whole[:10]) == sorted(i for i, _ in whole[10:]) == list(range(10))
    assert whole[:10] != whole[10:] and whole[:10] != stream(1)  # a new order each epoch and seed
    assert stream(0, at=7) == whole[7:17]  # resumed mid-epoch, the same images with the same draws
    ranks = [stream(0, rank, 2) for rank in (0, 1)]  # DDP: each rank half of every epoch, none shared
    assert sorted(i for r in ranks for i, _ in r) == list(range(10))
    assert stream(0, 1, 2, at=3) == (ranks[1] + stream(0, 1, 2, at=5))[3:8]
    alone = ImageStream(10, 0)  # outside training: pass after pass, epoch after epoch
    assert list(alone) + list(alone) == whole


def test_batches_take_the_size_their_first_image_falls_in_and_a_pass_ends_before_it_overruns() -> None:
    """A growth schedule's batch size (8 below 16 images, then 3) per batch: no epoch ends early,
    the sizes follow the position alone (prefetching cannot change them), a pass stops before a
    batch that would run past its images and the next pass begins there."""
    trained = [0]
    stream = ImageStream(20, 0, position=lambda: trained[0])
    batches = ScheduledBatches(stream, lambda images: 8 if images < 16 else 3)
    assert len(batches) == 3
    first = list(batches)
    assert [len(b) for b in first] == [8, 8, 3]  # the third would be 4 more: 16 + 3 = 19 <= 20
    assert [key for b in first for key in b] == [stream.at(p) for p in range(19)]
    trained[0] = 19  # the next pass reads on from the images trained, across the epoch boundary
    second = list(batches)
    assert [len(b) for b in second] == [3] * 6 and second[0][0] == stream.at(19)
    # DDP: the rule sees the images of both processes, each rank its half of the stream
    ranks = [ScheduledBatches(ImageStream(20, 0, rank, 2, position=lambda: 0),
                              lambda images: 4 if images < 8 else 2) for rank in (0, 1)]
    assert [[len(b) for b in r] for r in ranks] == [[4, 2, 2, 2]] * 2
    assert sorted(i for r in ranks for b in r for i, _ in b) == list(range(20))


def test_a_resume_that_would_read_another_order_says_so_and_observers_draw_nothing() -> None:
    loader = StreamLoader(list(range(10)), batch_sampler=ScheduledBatches(ImageStream(10, 0), lambda images: 2))
    loader.load_state_dict(loader.state_dict())  # the same order: silent
    with pytest.warns(UserWarning, match="read in another order than before the resume"):
        loader.load_state_dict({"seed": 1, "images": 10, "ranks": 1})
    before = torch.get_rng_state()
    with rng_untouched():  # e.g. a sample grid interrupted by Ctrl-C
        torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)
