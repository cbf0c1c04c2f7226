"""Tests for t2f.nets.text_encoder: LSTM caption encoder, conditioning augmentation, KL, T2F generator."""

from __future__ import annotations

import math

import pytest
import torch

from t2f.nets.layers import upsample2x
from t2f.nets.text_encoder import ConditioningAugmentation, T2FGenerator, TextEncoder, kl_divergence

VOCAB = 30


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _encoder(**kw) -> TextEncoder:
    return TextEncoder(VOCAB, embedding_dim=8, hidden_dim=16, num_layers=2, **kw).eval()


def _pad(captions: list[list[int]], extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(c) for c in captions) + extra
    tokens = torch.zeros(len(captions), length, dtype=torch.long)
    for i, c in enumerate(captions):
        tokens[i, : len(c)] = torch.tensor(c)
    return tokens, torch.tensor([len(c) for c in captions])


def test_text_encoder_shape():
    enc = _encoder()
    tokens, lengths = _pad([[1, 2, 3], [4, 5]])
    out = enc(tokens, lengths)
    assert out.shape == (2, 16)
    assert enc.output_dim == 16


def test_embedding_independent_of_padding():
    enc = _encoder()
    caption = [5, 9, 3, 12]
    with torch.no_grad():
        alone = enc(*_pad([caption]))
        padded = enc(*_pad([caption], extra=7))
        assert _pad([caption], extra=7)[0].shape == (1, 11)
        torch.testing.assert_close(alone, padded)
        # batch with mixed lengths (unsorted), each caption gets its own embedding
        captions = [[1, 2], [7, 8, 9, 10, 11, 12], caption, [3]]
        batch = enc(*_pad(captions, extra=3))
        for i, c in enumerate(captions):
            torch.testing.assert_close(batch[i : i + 1], enc(*_pad([c])))
        torch.testing.assert_close(batch[2:3], alone)


def test_text_encoder_lengths_on_any_device_and_validation():
    enc = _encoder(dropout=0.1)
    tokens, lengths = _pad([[1, 2, 3], [4]])
    with torch.no_grad():
        torch.testing.assert_close(enc(tokens, lengths), enc(tokens, [3, 1]))
    with pytest.raises(ValueError, match="length"):
        enc(tokens, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="length"):
        enc(tokens, torch.tensor([4, 1]))


def test_text_encoder_gradients():
    enc = TextEncoder(VOCAB, embedding_dim=8, hidden_dim=16, num_layers=2)
    tokens, lengths = _pad([[1, 2, 3], [4, 5]], extra=2)
    enc(tokens, lengths).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert enc.embedding.weight.grad[0].abs().sum() == 0  # PAD gets no gradient


def test_kl_divergence_values():
    zeros = torch.zeros(3, 5)
    assert kl_divergence(zeros, zeros).item() == 0.0
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # sample 0: 0.5 * [(1 + 1 - 1 - 0) + (2 + 0 - 1 - ln 2)] = 0.5 * (2 - ln 2)
    # sample 1: 0.5 * [(1 + 0 - 1 - 0) + (1 + 4 - 1 - 0)] = 2
    expected = (0.5 * (2 - math.log(2.0)) + 2.0) / 2
    assert kl_divergence(mu, logvar).item() == pytest.approx(expected, rel=1e-6)


def test_conditioning_augmentation():
    ca = ConditioningAugmentation(16, 6)
    emb = torch.randn(5, 16)
    c, mu, logvar = ca(emb)
    assert c.shape == mu.shape == logvar.shape == (5, 6)
    assert not torch.allclose(c, mu)
    ca.eval()
    c_eval, mu_eval, _ = ca(emb)
    assert not torch.allclose(c_eval, mu_eval)  # still samples in eval
    c_det, mu_det, _ = ca(emb, sample=False)
    torch.testing.assert_close(c_det, mu_det)
    torch.testing.assert_close(mu_det, mu)
    eps = torch.randn(5, 6)  # given noise: c = mu + sigma * eps exactly, for reproducible samples
    c_eps, mu_eps, logvar_eps = ca(emb, eps=eps)
    torch.testing.assert_close(c_eps, mu_eps + torch.exp(0.5 * logvar_eps) * eps)
    with pytest.raises(ValueError, match="eps must have shape"):
        ca(emb, eps=torch.randn(5, 7))
    # reparameterised: gradient flows through c to the linear layer
    ca.train()
    c, mu, logvar = ca(emb)
    (c.sum() + kl_divergence(mu, logvar)).backward()
    assert ca.fc.weight.grad.abs().sum() > 0


def test_conditioning_augmentation_sample_statistics():
    ca = ConditioningAugmentation(4, 3)
    with torch.no_grad():
        ca.fc.weight.zero_()
        ca.fc.bias.copy_(torch.tensor([1.0, -2.0, 0.0, 0.0, math.log(4.0), 0.0]))
        c, _, _ = ca(torch.randn(20000, 4))
    torch.testing.assert_close(c.mean(0), torch.tensor([1.0, -2.0, 0.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(c.std(0), torch.tensor([1.0, 2.0, 1.0]), atol=0.05, rtol=0)


def test_t2f_generator():
    gen = T2FGenerator(
        text_dim=16, condition_dim=6, noise_dim=10, max_resolution=16, channels=[16, 8, 8]
    )
    emb, z = torch.randn(3, 16), torch.randn(3, 10)
    for stage, res in enumerate([4, 8, 16]):
        images, mu, logvar = gen.images(emb, z, stage, 0.5)
        assert images.shape == (3, 3, res, res)
        assert mu.shape == logvar.shape == (3, 6)
    with torch.no_grad():
        a, mu, _ = gen.images(emb, z, 1, 0.0, sample=False)
        b, _, _ = gen.images(emb, z, 0, 1.0, sample=False)
        torch.testing.assert_close(a, upsample2x(b), rtol=0, atol=0)
        torch.testing.assert_close(gen.generator(torch.cat([mu, z], 1), 1, 0.0), a)
        # different text -> different images
        other, _, _ = gen.images(torch.randn(3, 16), z, 1, 1.0, sample=False)
        assert not torch.allclose(other, gen.images(emb, z, 1, 1.0, sample=False)[0])
    with pytest.raises(ValueError, match="z must have shape"):
        gen.images(emb, torch.randn(3, 11), 0)


def test_t2f_end_to_end_gradients():
    enc = TextEncoder(VOCAB, embedding_dim=8, hidden_dim=16)
    gen = T2FGenerator(16, 6, 10, 8, channels=[8, 8])
    tokens, lengths = _pad([[1, 2, 3], [4, 5], [6]], extra=1)
    images, mu, logvar = gen.images(enc(tokens, lengths), torch.randn(3, 10), 1, 0.5)
    (images.square().mean() + kl_divergence(mu, logvar)).backward()
    for module in (enc, gen):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_conditioning_augmentation_draws_float32_noise_under_bf16_autocast():
    """A caller's draw and its own are alike: float32, so the condition stays float32."""
    ca = ConditioningAugmentation(6, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c, mu, _ = ca(torch.randn(3, 6))
    assert mu.dtype == torch.bfloat16 and c.dtype == torch.float32


def test_t2f_generator_condition_at_every_block():
    """With condition_channels the caption's condition reaches each block above 4x4 directly: with
    the latent fixed, another condition changes the images from 8 px on, not at 4x4, and every
    block's projection learns; without it the generator has none of those layers."""
    gen = T2FGenerator(16, 6, 10, 16, channels=[16, 8, 8], condition_channels=4)
    plain = T2FGenerator(16, 6, 10, 16, channels=[16, 8, 8])
    assert all(block.condition_proj is not None for block in gen.generator.blocks[1:])
    assert not any(hasattr(block, "condition_proj") and block.condition_proj is not None
                   for block in plain.generator.blocks)
    assert gen.generator.blocks[1].conv1.weight.shape[1] == 16 + 4
    latent, c, other = torch.randn(3, 16), torch.randn(3, 6), torch.randn(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(gen.generator(latent, 0, condition=c), gen.generator(latent, 0, condition=other),
                                   rtol=0, atol=0)
        for stage in (1, 2):
            assert not torch.allclose(gen.generator(latent, stage, condition=c),
                                      gen.generator(latent, stage, condition=other))
    images, mu, logvar = gen.images(torch.randn(3, 16), torch.randn(3, 10), 2, 0.5)
    images.square().mean().backward()
    for block in gen.generator.blocks[1:]:
        assert block.condition_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="condition must have shape"):
        gen.generator(latent, 1)
    with pytest.raises(ValueError, match="model.generator.condition_channels=-1 must be >= 0"):
        T2FGenerator(16, 6, 10, 16, condition_channels=-1)
