"""Diversity for one caption and conditional SWD: hand-computed values, then end to end through
``MetricSuite`` with generators whose answers are known (real faces: about 1; one face per caption: 0)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2f.data.synthetic import SyntheticDataModule, synthetic_attribute_task
from t2f.metrics.diversity import (
    caption_groups,
    diversity_ratio,
    matching_reals,
    mean_pairwise_distance,
)
from t2f.metrics.suite import MetricSuite, _items

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mean_pairwise_distance_and_ratio_by_hand() -> None:
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])
    assert float(mean_pairwise_distance(x)) == pytest.approx((5 + 4 + 3) / 3)
    assert float(mean_pairwise_distance(x[:1])) == 0.0
    assert float(mean_pairwise_distance(x[:1].repeat(5, 1))) == 0.0  # identical faces: no diversity
    out = diversity_ratio(torch.tensor([1.0, 3.0, 9.0]), torch.tensor([2.0, 2.0, 9.0]), torch.tensor([4, 8, 1]), 2)
    assert float(out["diversity"]) == pytest.approx(2.0 / 2.0) and int(out["diversity_captions"]) == 2
    assert torch.isnan(diversity_ratio(torch.ones(2), torch.ones(2), torch.ones(2), 2)["diversity"])
    assert caption_groups(2, 3).tolist() == [0, 0, 0, 1, 1, 1]


def test_matching_reals_have_every_mentioned_attribute() -> None:
    attributes = torch.tensor([[0, 1], [1, 1], [1, 0], [1, 1], [0, 0]])
    targets = torch.tensor([[1, -1], [1, 1], [-1, -1], [2, 0]])
    found = matching_reals(targets, attributes, count=2, seed=0)
    assert set(found[0]) <= {1, 2, 3} and len(found[0]) == 2
    assert sorted(found[1]) == [1, 3]
    assert len(found[2]) == 2 and found[3] == []  # nothing mentioned: any face; no face has value 2
    assert found == matching_reals(targets, attributes, count=2, seed=0)


class _KnownGenerator:
    """Draws distinct real training faces that have the caption's attributes (``real``), or the
    same such face for every latent (``constant``): the two ends of the diversity scale."""

    device = torch.device("cpu")
    text = "captions"  # text-conditional: the suite asks the module's text component

    def __init__(self, dm: SyntheticDataModule, constant: bool) -> None:
        self.dm, self.constant, self.task = dm, constant, synthetic_attribute_task()
        self.attributes = _items(dm.train_set, range(len(dm.train_set)), ("attributes",))["attributes"]

    def sample_inputs(self, n: int, conditions: dict, generator: torch.Generator, noise: bool = True) -> dict:
        return {"z": torch.randint(0, 1 << 30, (n,), generator=generator)}

    def noise_inputs(self, n: int, generator: torch.Generator) -> dict:
        return {}

    def encode_captions(self, captions: list[str], vocab) -> dict:
        return {"text": captions}

    def generate(self, inputs: dict) -> torch.Tensor:
        rows = matching_reals(self.task.targets(inputs["text"][:1]), self.attributes, 10_000, seed=5)[0]
        rows = rows or list(range(len(self.attributes)))  # no face has them all: such captions are left out
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(int(inputs["z"][0])))
        picks = [rows[0] if self.constant else rows[int(order[i % len(rows)])] for i in range(len(inputs["z"]))]
        return _items(self.dm.train_set, picks)["image"]


def test_diversity_of_real_faces_is_about_one_and_of_one_face_per_caption_zero(tmp_path: Path) -> None:
    dm = SyntheticDataModule(root=str(tmp_path / "synthetic"), size=600, val_size=60, resolution=16, batch_size=8)
    dm.setup("fit")
    suite = MetricSuite(diversity={"captions": 24, "per_caption": 8, "min_real": 8},  # 8 distinct faces each
                        swd={"dirs_per_repeat": 16, "patches_per_image": 16},
                        alignment={"train_images": 600, "val_images": 40, "epochs": 2, "width": 8},
                        num_samples=8, num_real=64, batch_size=8, cache_dir=str(tmp_path / "cache"))
    real = suite._diversity(_KnownGenerator(dm, False), dm, _identity(dm), 16, 0, _base(), {})[0]
    constant = suite._diversity(_KnownGenerator(dm, True), dm, _identity(dm), 16, 0, _base(), {})[0]
    assert int(real["diversity_captions"]) >= 6
    assert 0.85 < float(real["diversity"]) < 1.15, real  # 0.99 here
    assert float(constant["diversity"]) == 0.0
    assert float(real["swd_conditional"]) < float(constant["swd_conditional"])


def _identity(dm):
    from t2f.metrics.suite import dataset_identity

    return dataset_identity(dm)


def _base() -> dict:
    return dict(dataset="synthetic", resolution=16, num_real=0, num_fake=0, split="train", crop="none", resize="box")
