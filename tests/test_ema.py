"""The EMA generator: its half-life rule and batch-norm statistics of its own."""

from __future__ import annotations

import pytest
import torch

from t2f.train import train
from tests.conftest import compose_config
from tests.helpers import dcgan_module


def _dcgan(**kwargs):
    return dcgan_module(**kwargs)


def test_half_life_follows_the_batch_and_the_ramp_up():
    module = _dcgan()  # auto: StyleGAN2-ADA's batch * 10 / 32 kimg, at most 5% of the images seen
    module.images_seen = 1_000_000
    assert module.ema_half_life_images(64) == pytest.approx(20_000)
    assert module.ema_half_life_images(32) == pytest.approx(10_000)
    module.images_seen = 100_000  # a 100 kimg run ends with a 5 kimg half-life
    assert module.ema_half_life_images(64) == pytest.approx(5_000)
    fixed = _dcgan(ema_half_life_kimg=2, ema_rampup=None)
    assert fixed.ema_half_life_images(64) == pytest.approx(2_000)
    with pytest.raises(ValueError, match="ema_half_life_kimg=0 must be positive or auto"):
        _dcgan(ema_half_life_kimg=0)


def test_update_ema_averages_weights_and_leaves_batch_norm_statistics_alone():
    module = _dcgan(ema_half_life_kimg=1, ema_rampup=None)
    with torch.no_grad():
        for p in module.generator.parameters():
            p.add_(1.0)
        module.generator.net[1].running_mean.fill_(7.0)  # the training generator's statistics
    ema_before = [p.clone() for p in module.generator_ema.parameters()]
    module.update_ema(world_batch=1000)  # one half-life: half way
    for p_ema, p_old, p in zip(module.generator_ema.parameters(), ema_before, module.generator.parameters()):
        torch.testing.assert_close(p_ema, (p_old + p) / 2)
    assert not module.generator_ema.net[1].running_mean.any()  # not copied


def test_ema_batch_norm_statistics_are_measured_on_its_own_samples():
    module = _dcgan(ema_norm_samples=512)
    with torch.no_grad():  # an EMA whose weights differ from the training generator's
        for p in module.generator_ema.parameters():
            p.mul_(1.5).add_(0.1)
        module.generator.net[1].running_mean.fill_(7.0)
    rng = torch.get_rng_state()
    module.refresh_ema_norms()
    assert torch.equal(torch.get_rng_state(), rng)  # training's random state is untouched
    # by hand: the first batch norm's input is the first transposed convolution of the same latents
    gen = torch.Generator().manual_seed(0)
    z = torch.cat([module.sample_inputs(256, {}, generator=gen)["z"] for _ in range(2)])
    first = module.generator_ema.net[0](z.view(512, 8, 1, 1))
    bn = module.generator_ema.net[1]
    torch.testing.assert_close(bn.running_mean, first.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    per_batch_var = torch.stack([h.var(dim=(0, 2, 3)) for h in first.split(256)])  # unbiased, per batch
    torch.testing.assert_close(bn.running_var, per_batch_var.mean(0), rtol=1e-4, atol=1e-5)
    # the same weights give the same statistics; new weights (more images seen) new ones
    stats = bn.running_mean.clone()
    module.refresh_ema_norms()
    assert torch.equal(bn.running_mean, stats)
    with torch.no_grad():
        module.generator_ema.net[0].weight.mul_(2)
    module.images_seen += 64
    module.generate({"z": torch.randn(2, 8)})  # sampling from the EMA refreshes its statistics first
    torch.testing.assert_close(bn.running_mean, 2 * stats)


def test_checkpoint_holds_the_ema_statistics_it_samples_with(tmp_path, one_thread):
    from t2f.checkpoints import build_module, read_checkpoint

    cfg = compose_config(tmp_path, [])
    train(cfg)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = read_checkpoint(path)
    module = build_module(ckpt, path)
    trained_g = ckpt["state_dict"]["generator.net.1.running_mean"]
    saved_ema = ckpt["state_dict"]["generator_ema.net.1.running_mean"]
    assert not torch.allclose(saved_ema, trained_g)  # its own, not the training generator's
    assert torch.equal(module.generator_ema.net[1].running_mean, saved_ema)  # loaded, not recomputed
    module._ema_norms_at = None  # recompute: training ran channels-last, this module is NCHW (last bits)
    module.refresh_ema_norms()
    torch.testing.assert_close(module.generator_ema.net[1].running_mean, saved_ema, rtol=1e-4, atol=1e-6)
