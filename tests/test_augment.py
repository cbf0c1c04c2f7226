"""Differentiable augmentation (t2f.augment), its hook in the training step, and dataset.max_images."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from t2f.augment import (
    POLICIES,
    Augment,
    brightness,
    build_augment,
    contrast,
    cutout,
    diff_augment,
    saturation,
    translation,
)
from t2f.data.base import FaceDataModule, collate_faces
from t2f.gan_loss import GANLoss
from tests.helpers import dcgan_module, stylegan_module

ALL = "color,translation,cutout"


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("size", [4, 16])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_each_policy_is_differentiable_and_keeps_the_shape(policy, size):
    x = torch.rand(6, 3, size, size, requires_grad=True)
    y = diff_augment(x, policy, _seeded())
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_and_cutout_move_or_zero_pixels_and_p_zero_is_identity():
    x = torch.rand(16, 3, 16, 16) + 0.5  # no zeros of its own: any zero was put there
    for op in (translation, cutout):
        y = op(x, _seeded(1))
        assert not torch.equal(y, x)
        assert torch.isin(y, torch.cat([x.flatten(), torch.zeros(1)])).all()  # values kept or zero
        assert (y == 0).any() and torch.equal(op(x, _seeded(1), p=0.0), x)
    # cutout zeroes at most a half-side square (an 8x8 hole), the same one in every channel
    holes = (cutout(x, _seeded(2)) == 0)
    assert (holes.sum(dim=(2, 3)) <= 64).all() and (holes == holes[:, :1]).all()
    # translation shifts by at most 1/8 of the side: the centre 12x12 stays inside
    assert torch.isin(translation(x, _seeded(3))[:, :, 2:-2, 2:-2], x).all()
    assert torch.equal(diff_augment(x, ALL, _seeded(), p=0.0), x)
    assert torch.equal(diff_augment(x, None), x) and build_augment({"policy": None}) is None
    # colour, DiffAugment's ranges: one brightness shift per image within +-0.5; saturation keeps
    # each pixel's channel mean, contrast each image's mean
    shift = brightness(x, _seeded()) - x
    assert shift.abs().amax() <= 0.5 and torch.allclose(shift, shift[:, :1, :1, :1].expand_as(x), atol=1e-6)
    assert torch.allclose(saturation(x, _seeded()).mean(dim=1), x.mean(dim=1), atol=1e-5)
    assert torch.allclose(contrast(x, _seeded()).mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)


def test_the_same_seed_gives_the_same_augmentation_and_another_seed_another():
    x = torch.rand(8, 3, 8, 8)
    assert torch.equal(diff_augment(x, ALL, _seeded(5)), diff_augment(x, ALL, _seeded(5)))
    assert not torch.equal(diff_augment(x, ALL, _seeded(5)), diff_augment(x, ALL, _seeded(6)))
    torch.manual_seed(9)  # no generator: torch's default one (per-rank seeded in training)
    a = diff_augment(x, ALL)
    torch.manual_seed(9)
    assert torch.equal(diff_augment(x, ALL), a)


def test_bf16_autocast_keeps_the_dtype_and_the_gradient():
    x = torch.rand(4, 3, 8, 8, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = diff_augment(x.contiguous(memory_format=torch.channels_last), ALL, _seeded(), p=0.5)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    y.float().sum().backward()
    assert x.grad.abs().sum() > 0


def test_policy_names_are_checked():
    with pytest.raises(ValueError, match="choose from color, translation, cutout"):
        Augment("color,flip")
    with pytest.raises(ValueError, match="unknown keys"):
        build_augment({"policy": "color", "prob": 0.5})
    assert Augment(["color", "cutout"]).policy == ("color", "cutout")


def test_ada_moves_p_toward_the_target_and_its_state_is_a_checkpoint_buffer():
    ada = Augment(ALL, ada_target=0.6, ada_interval=4, ada_kimg=1.0)
    assert float(ada.p) == 0.0
    ada.accumulate(torch.tensor(100.0), torch.tensor(100.0))  # r_t = 1: the critic overfits
    assert float(ada.adjust()) == 1.0 and float(ada.p) == pytest.approx(0.1)  # 100 images / 1 kimg
    ada.accumulate(torch.tensor(-20.0), torch.tensor(50.0))  # r_t = -0.4 < 0.6: less augmentation
    ada.adjust()
    assert float(ada.p) == pytest.approx(0.05)
    ada.accumulate(torch.tensor(3.0), torch.tensor(5.0))  # mid-interval statistics are state too
    resumed = Augment(ALL, ada_target=0.6, ada_interval=4, ada_kimg=1.0)
    resumed.load_state_dict(ada.state_dict())
    assert float(resumed.p) == pytest.approx(0.05) and resumed.signs.tolist() == [3.0, 5.0]


def _dcgan(augment=None, **kw):
    return dcgan_module(norm="layer", loss=GANLoss("wgan_gp"), channels_last=False, augment=augment, **kw)


def test_modules_without_augmentation_have_the_checkpoint_keys_they_always_had():
    """Old checkpoints (no model.augment) load: only ADA adds state, under augment.*."""
    torch.manual_seed(0)
    keys = set(dcgan_module(norm="layer").state_dict())
    assert set(_dcgan().state_dict()) == keys == set(_dcgan({"policy": ALL}).state_dict())
    assert set(_dcgan({"policy": ALL, "ada_target": 0.6}).state_dict()) - keys == {"augment.p", "augment.signs"}


class _Images(Dataset):
    def __init__(self, n: int, size: int) -> None:
        self.images = torch.rand(n, 3, size, size) * 2 - 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i]}


def _spy(module) -> list[tuple[str, torch.Tensor]]:
    """Records augmentation outputs ("aug") and every image batch the critic reads ("critic")."""
    events: list[tuple[str, torch.Tensor]] = []
    augment, trunk = module.augment.forward, module.discriminator.features

    def augment_spy(images, generator=None):
        out = augment(images, generator)
        events.append(("aug_in", images))
        events.append(("aug", out))
        return out

    def trunk_spy(images, stage=None, alpha=1.0):
        events.append(("critic", images))
        return trunk(images, stage, alpha)

    module.augment.forward = augment_spy
    module.discriminator.features = trunk_spy
    return events


def _fit_one_batch(module, images: int, size: int) -> pl.Trainer:
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(module, DataLoader(_Images(images, size), batch_size=images, collate_fn=collate_faces))
    return trainer


@pytest.mark.parametrize("kind", ["dcgan", "stylegan_4px"])
def test_the_critic_sees_augmented_real_and_fake_images_in_both_steps(kind, one_thread):
    torch.manual_seed(0)
    policy = {"policy": "translation,cutout", "ada_target": 0.6, "ada_interval": 1}
    if kind == "dcgan":
        module, size, stage_px = _dcgan(policy), 8, 8
    else:  # a progressive model at its first stage: real images are reduced to 4 px, then augmented
        widths = {"fmap_base": 8, "fmap_max": 4}
        module = stylegan_module(8, generator=widths, discriminator=widths, channels_last=False, augment=policy)
        assert module.stage == 0
        size, stage_px = 8, 4
    events = _spy(module)
    trainer = _fit_one_batch(module, 4, size)
    augmented = [t for name, t in events if name == "aug"]
    inputs = [t for name, t in events if name == "aug_in"]
    critic = [t for name, t in events if name == "critic"]
    assert len(augmented) == 3  # real and fake in the critic step, fake in the generator step
    assert all(t.shape[-1] == stage_px for t in inputs)
    assert not inputs[0].requires_grad and inputs[2].requires_grad  # the G step's fake carries G's graph
    same = lambda a, b: a.data_ptr() == b.data_ptr() and a.shape == b.shape  # noqa: E731
    assert same(critic[0], augmented[0]) and same(critic[1], augmented[1])  # D step: real, then fake
    assert same(critic[-1], augmented[2])  # G step
    # ADA adjusted p after the step, from 0 up by 4 images / 100 kimg if r_t (k/4, never 0.6) > 0.6
    r_t = float(trainer.callback_metrics["augment/r_t"])
    assert float(module.augment.p) == pytest.approx(4e-5 if r_t > 0.6 else 0.0)
    assert float(trainer.callback_metrics["augment/p"]) == float(module.augment.p)


class _Limited(FaceDataModule):
    def build(self) -> None:
        self.train_set, self.val_set = _Images(50, 8), _Images(5, 8)
        self.train_set.captions = "the set's own attribute"


def test_max_images_trains_on_a_fixed_subset_and_keeps_the_sets_attributes():
    dm = _Limited(resolution=8, batch_size=4, max_images=10)
    dm.setup("fit")
    again = _Limited(resolution=8, batch_size=4, max_images=10)
    again.setup("fit")
    assert len(dm.train_set) == 10 and len(dm.val_set) == 5
    assert list(dm.train_set.indices) == list(again.train_set.indices) != list(range(10))
    assert dm.train_set.captions == "the set's own attribute"
    assert len(next(iter(dm.train_dataloader()))["image"]) == 4
    whole = _Limited(resolution=8, max_images=500)
    whole.setup()
    assert len(whole.train_set) == 50
    with pytest.raises(ValueError, match="max_images"):
        _Limited(max_images=0)


def test_config_turns_augmentation_on_and_limits_the_dataset(tmp_path):
    from hydra.utils import instantiate

    from tests.conftest import compose_config

    cfg = compose_config(tmp_path, ["model.augment.policy=[translation,cutout]", "+dataset.max_images=10",
                                    "model.loss.name=wgan_gp", "model.discriminator.norm=layer"])
    assert instantiate(cfg.model).augment.policy == ("translation", "cutout")
    assert instantiate(cfg.dataset)._max_images == 10
    off = compose_config(tmp_path, ["model.augment=null"])
    assert instantiate(off.model).augment is None
