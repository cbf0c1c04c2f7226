"""Tests for the GAN-INT-CLS nets (t2f.nets.gan_int_cls): shapes, conditioning, rebuilding."""

from __future__ import annotations

import pytest
import torch

from t2f.nets.gan_int_cls import GANINTCLSDiscriminator, GANINTCLSGenerator
from t2f.nets.recorded import generator_class

TEXT, LATENT, EMBED, WIDTH, RES, BATCH = 12, 10, 6, 8, 16, 4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _nets(resolution: int = RES) -> tuple[GANINTCLSGenerator, GANINTCLSDiscriminator]:
    g = GANINTCLSGenerator(TEXT, latent_dim=LATENT, resolution=resolution, width=WIDTH, embed_dim=EMBED)
    d = GANINTCLSDiscriminator(TEXT, resolution=resolution, width=WIDTH, embed_dim=EMBED)
    return g, d


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_shapes_and_range(resolution):
    g, d = _nets(resolution)
    z, text = torch.randn(BATCH, LATENT), torch.randn(BATCH, TEXT)
    images, aux = g(z, text)
    assert images.shape == (BATCH, 3, resolution, resolution)
    assert aux == {}
    assert images.min() >= -1 and images.max() <= 1
    features = d.features(images)
    assert features.shape[0] == BATCH and features.shape[2:] == (4, 4)
    logits = d(images, text)
    assert logits.shape == (BATCH,)
    torch.testing.assert_close(d.head(features, text), logits)
    assert g.sample(z, text).shape == images.shape
    assert d.condition_dim == TEXT and d.embed_dim == 0


def test_generator_depends_on_condition_and_z():
    g, _ = _nets()
    g.eval()
    z, text = torch.randn(BATCH, LATENT), torch.randn(BATCH, TEXT)
    with torch.no_grad():
        base = g(z, text)[0]
        assert not torch.allclose(g(z, torch.randn(BATCH, TEXT))[0], base)
        assert not torch.allclose(g(torch.randn(BATCH, LATENT), text)[0], base)
        torch.testing.assert_close(g(z, text)[0], base)
        torch.testing.assert_close(g.sample(z, text, psi=0.5), g(z * 0.5, text)[0])


def test_discriminator_depends_on_condition_and_grads_reach_compression():
    _, d = _nets()
    images, text = torch.rand(BATCH, 3, RES, RES) * 2 - 1, torch.randn(BATCH, TEXT)
    d.eval()
    with torch.no_grad():
        assert not torch.allclose(d(images, text), d(images, torch.randn(BATCH, TEXT)))
    d.train()
    d(images, text).sum().backward()
    linear = d.compress[0]
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0


def test_init_kwargs_rebuild_is_bit_identical():
    g = GANINTCLSGenerator(TEXT, latent_dim=LATENT, resolution=RES, width=WIDTH, embed_dim=EMBED, image_channels=1)
    assert g.init_kwargs == {"text_dim": TEXT, "latent_dim": LATENT, "resolution": RES, "width": WIDTH,
                             "embed_dim": EMBED, "image_channels": 1}
    rebuilt = type(g)(**g.init_kwargs)
    rebuilt.load_state_dict(g.state_dict())
    g.eval()
    rebuilt.eval()
    z, text = torch.randn(BATCH, LATENT), torch.randn(BATCH, TEXT)
    with torch.no_grad():
        assert torch.equal(rebuilt(z, text)[0], g(z, text)[0])


def test_registered_as_generator():
    import t2f.nets.gan_int_cls  # noqa: F401  (registers the class)

    assert generator_class("t2f.nets.gan_int_cls.GANINTCLSGenerator") is GANINTCLSGenerator
    assert GANINTCLSGenerator.family == "gan_int_cls" and GANINTCLSGenerator.text_conditional


def test_missing_or_misshapen_inputs_raise():
    g, d = _nets()
    z, text = torch.randn(BATCH, LATENT), torch.randn(BATCH, TEXT)
    images = torch.zeros(BATCH, 3, RES, RES)
    with pytest.raises(ValueError, match="caption embedding"):
        g(z)
    with pytest.raises(ValueError, match="caption embedding"):
        g.sample(z)
    with pytest.raises(ValueError, match="caption embedding"):
        d(images)
    with pytest.raises(ValueError, match=rf"\(B, {LATENT}\)"):
        g(torch.randn(BATCH, LATENT + 1), text)
    with pytest.raises(ValueError, match=rf"\({BATCH}, {TEXT}\)"):
        g(z, torch.randn(BATCH, TEXT + 1))
    with pytest.raises(ValueError, match=rf"\({BATCH}, {TEXT}\)"):
        d(images, torch.randn(BATCH - 1, TEXT))
    with pytest.raises(ValueError, match="DCGAN supports resolutions"):
        GANINTCLSGenerator(TEXT, resolution=20)
