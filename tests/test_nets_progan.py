"""Tests for the shared layers (t2f.nets.layers) and the progressive nets (t2f.nets.progan)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from t2f.nets.layers import (
    Blur,
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchStdDev,
    PixelNorm,
    downsample2x,
    upsample2x,
)
from t2f.nets.progan import (
    ProGANDiscriminator,
    ProGANGenerator,
    num_stages,
    resolve_channels,
    stage_resolutions,
)

CHANNELS = [16, 16, 8, 8]  # 4, 8, 16, 32
MAX_RES = 32
LATENT = 12


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------- layers


def test_equalized_linear_effective_weight_is_he_scaled():
    layer = EqualizedLinear(20, 7)
    assert layer.weight_scale == pytest.approx(math.sqrt(2) / math.sqrt(20))
    torch.testing.assert_close(
        layer.effective_weight(), layer.weight * math.sqrt(2) / math.sqrt(20)
    )
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(5, 20)
    expected = F.linear(x, layer.weight * math.sqrt(2) / math.sqrt(20), layer.bias)
    torch.testing.assert_close(layer(x), expected)
    # stored weights are N(0, 1), bias starts at 0
    big = EqualizedLinear(256, 256)
    assert big.weight.std().item() == pytest.approx(1.0, abs=0.02)
    assert torch.count_nonzero(big.bias) == 0
    assert EqualizedLinear(4, 3, bias_init=1.0).effective_bias().tolist() == [1.0, 1.0, 1.0]


def test_equalized_conv_effective_weight_is_he_scaled():
    conv = EqualizedConv2d(6, 5, 3)
    fan_in = 6 * 3 * 3
    torch.testing.assert_close(
        conv.effective_weight(), conv.weight * math.sqrt(2) / math.sqrt(fan_in)
    )
    x = torch.randn(2, 6, 7, 7)
    expected = F.conv2d(x, conv.weight * math.sqrt(2) / math.sqrt(fan_in), conv.bias, padding=1)
    out = conv(x)
    assert out.shape == (2, 5, 7, 7)
    torch.testing.assert_close(out, expected)
    # gain and valid padding are honoured
    conv1 = EqualizedConv2d(4, 3, 4, padding=0, gain=1.0)
    assert conv1.weight_scale == pytest.approx(1.0 / math.sqrt(4 * 16))
    assert conv1(torch.randn(1, 4, 4, 4)).shape == (1, 3, 1, 1)


def test_lr_multiplier_scales_effective_weight_and_gradient():
    lr = 0.01
    slow = EqualizedLinear(8, 4, lr_multiplier=lr)
    fast = EqualizedLinear(8, 4)
    # init: stored std 1/lr, effective std still He; effective bias init 0
    assert slow.weight_scale == pytest.approx(lr * math.sqrt(2) / math.sqrt(8))
    big = EqualizedLinear(256, 256, lr_multiplier=lr)
    assert big.weight.std().item() == pytest.approx(1.0 / lr, rel=0.02)
    assert big.effective_weight().std().item() == pytest.approx(
        math.sqrt(2) / math.sqrt(256), rel=0.02
    )
    # give both layers the same effective parameters
    with torch.no_grad():
        fast.bias.normal_()
        slow.weight.copy_(fast.weight / lr)
        slow.bias.copy_(fast.bias / lr)
    torch.testing.assert_close(slow.effective_weight(), fast.effective_weight())
    torch.testing.assert_close(slow.effective_bias(), fast.effective_bias())
    x = torch.randn(6, 8)
    torch.testing.assert_close(slow(x), fast(x))
    slow(x).square().sum().backward()
    fast(x).square().sum().backward()
    # d loss / d stored = lr * (He scale) * d loss / d effective: lr times smaller
    torch.testing.assert_close(slow.weight.grad, lr * fast.weight.grad)
    torch.testing.assert_close(slow.bias.grad, lr * fast.bias.grad)


def test_lr_multiplier_conv_gradient():
    lr = 0.1
    slow = EqualizedConv2d(3, 2, 3, lr_multiplier=lr)
    fast = EqualizedConv2d(3, 2, 3)
    with torch.no_grad():
        slow.weight.copy_(fast.weight / lr)
    x = torch.randn(2, 3, 5, 5)
    slow(x).sum().backward()
    fast(x).sum().backward()
    torch.testing.assert_close(slow.weight.grad, lr * fast.weight.grad)


def test_lr_multiplier_must_be_positive():
    with pytest.raises(ValueError, match="lr_multiplier"):
        EqualizedLinear(3, 3, lr_multiplier=0.0)


def test_pixel_norm_unit_mean_square():
    x = torch.randn(4, 10, 5, 5) * 7 + 3
    y = PixelNorm()(x)
    torch.testing.assert_close(y.square().mean(dim=1), torch.ones(4, 5, 5))
    z = PixelNorm()(torch.randn(3, 32) * 0.1)
    torch.testing.assert_close(z.square().mean(dim=1), torch.ones(3))


def test_minibatch_stddev_hand_computed():
    # batch 4, group 2 -> groups {0, 2} and {1, 3} (sample i in group i % 2)
    values = torch.tensor([0.0, 2.0, 10.0, 14.0])
    x = torch.zeros(4, 2, 2, 2)
    x[:, 0] = values[:, None, None]  # channel 1 stays constant -> std sqrt(eps) = 1e-4
    y = MinibatchStdDev(group_size=2)(x)
    assert y.shape == (4, 3, 2, 2)
    torch.testing.assert_close(y[:, :2], x)
    # group {0, 10}: std 5; group {2, 14}: std 6; averaged with channel 1's 1e-4
    expected = (torch.tensor([5.0, 6.0, 5.0, 6.0]) + 1e-4) / 2
    torch.testing.assert_close(y[:, 2], expected[:, None, None].expand(4, 2, 2))

    y2 = MinibatchStdDev(group_size=2, num_features=2)(x)
    assert y2.shape == (4, 4, 2, 2)
    torch.testing.assert_close(
        y2[:, 2], torch.tensor([5.0, 6.0, 5.0, 6.0])[:, None, None].expand(4, 2, 2)
    )
    torch.testing.assert_close(y2[:, 3], torch.full((4, 2, 2), 1e-4))

    # one group of 4: {0, 2, 10, 14}, mean 6.5, population var (42.25+20.25+12.25+56.25)/4 = 32.75
    y4 = MinibatchStdDev(group_size=4, num_features=2)(x)
    torch.testing.assert_close(y4[:, 2], torch.full((4, 2, 2), math.sqrt(32.75)))


def test_minibatch_stddev_group_fallback_and_errors():
    layer = MinibatchStdDev(group_size=4)
    assert layer.effective_group_size(8) == 4
    assert layer.effective_group_size(6) == 3
    assert layer.effective_group_size(7) == 1
    assert layer.effective_group_size(2) == 2
    assert layer(torch.randn(6, 4, 3, 3)).shape == (6, 5, 3, 3)
    single = layer(torch.randn(1, 4, 3, 3))
    torch.testing.assert_close(single[:, 4], torch.full((1, 3, 3), 1e-4))
    with pytest.raises(ValueError, match="num_features"):
        MinibatchStdDev(num_features=3)(torch.randn(4, 4, 2, 2))


def test_resampling():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    up = upsample2x(x)
    assert up.shape == (1, 1, 8, 8)
    torch.testing.assert_close(up[0, 0, :2, :2], torch.zeros(2, 2))
    torch.testing.assert_close(downsample2x(up), x)
    torch.testing.assert_close(downsample2x(x)[0, 0, 0, 0], torch.tensor(2.5))


def test_blur_is_the_normalised_binomial_filter_with_zero_padding():
    x = torch.zeros(1, 2, 5, 5)
    x[0, 0, 2, 2] = 16.0  # an impulse: the output is the kernel itself
    x[0, 1] = 1.0  # a constant: kept inside, fades at the zero-padded border
    y = Blur()(x)
    k = torch.tensor([1.0, 2.0, 1.0])
    torch.testing.assert_close(y[0, 0, 1:4, 1:4], torch.outer(k, k))
    torch.testing.assert_close(y[0, 1, 1:4, 1:4], torch.ones(3, 3))
    assert y[0, 1, 0, 0].item() == pytest.approx(9 / 16)
    checker = (torch.arange(6)[:, None] + torch.arange(6)).remainder(2).float().view(1, 1, 6, 6) * 2 - 1
    torch.testing.assert_close(Blur()(checker)[..., 1:5, 1:5], torch.zeros(1, 1, 4, 4))  # Nyquist removed


def test_blur_gradients_of_first_and_second_order_are_the_plain_convolutions():
    """The blur is its own backward (for the gradient penalties' double backward): its gradients
    must equal those autograd derives for the plain depthwise convolution."""
    blur = Blur().double()
    x = torch.randn(2, 3, 6, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(blur, (x,))
    assert torch.autograd.gradgradcheck(blur, (x,))

    def plain(t):
        return F.conv2d(t, blur.kernel.expand(3, 1, 3, 3), padding=1, groups=3)

    def penalty(f):  # a gradient penalty through the blur, and its gradient w.r.t. x
        g, = torch.autograd.grad(f(x).square().mul(torch.arange(5.0, dtype=torch.double)).sum(), x, create_graph=True)
        return torch.autograd.grad(g.pow(3).sum(), x)[0]

    torch.testing.assert_close(penalty(blur), penalty(plain))


# --------------------------------------------------------------------- stage helpers


def test_stage_helpers():
    assert stage_resolutions(8) == [4, 8]
    assert stage_resolutions(64) == [4, 8, 16, 32, 64]
    assert num_stages(1024) == 9
    assert resolve_channels(1024) == [512, 512, 512, 512, 256, 128, 64, 32, 16]
    assert resolve_channels(16, fmap_base=64, fmap_max=16) == [16, 16, 8]
    assert resolve_channels(16, channels=[3, 2, 1]) == [3, 2, 1]


@pytest.mark.parametrize("bad", [0, 4, 48, 100, 2048, 16.5, "abc"])
def test_max_resolution_must_be_power_of_two_in_range(bad):
    with pytest.raises(ValueError, match="max_resolution must be a power of two"):
        stage_resolutions(bad)
    with pytest.raises(ValueError, match="max_resolution"):
        ProGANGenerator(LATENT, bad, channels=[8, 8])
    with pytest.raises(ValueError, match="max_resolution"):
        ProGANDiscriminator(bad, channels=[8, 8])


def test_channels_length_validation():
    with pytest.raises(
        ValueError, match=r"channels must have exactly one entry per stage: expected length 4"
    ):
        ProGANGenerator(LATENT, 32, channels=[8, 8, 8])
    with pytest.raises(ValueError, match=r"channels .*expected length 4"):
        ProGANDiscriminator(32, channels=[8, 8, 8, 8, 8])
    with pytest.raises(ValueError, match="channels"):
        resolve_channels(8, channels=[8, 0])


# ------------------------------------------------------------------------- generator


def _gen() -> ProGANGenerator:
    return ProGANGenerator(LATENT, MAX_RES, channels=CHANNELS)


def test_generator_shapes_every_stage():
    gen = _gen()
    z = torch.randn(3, LATENT)
    assert gen.num_stages == 4
    for stage, res in enumerate([4, 8, 16, 32]):
        for alpha in (0.0, 0.5, 1.0):
            out = gen(z, stage, alpha)
            assert out.shape == (3, 3, res, res)
            assert torch.isfinite(out).all()


def test_generator_default_widths_and_all_params_exist():
    gen = ProGANGenerator(8, 16, fmap_base=64, fmap_max=16)
    assert gen.channels == [16, 16, 8]
    assert len(gen.blocks) == len(gen.to_rgb) == 3


def test_generator_fade_in_continuity():
    gen = _gen()
    z = torch.randn(4, LATENT)
    with torch.no_grad():
        for stage in range(1, gen.num_stages):
            prev = gen(z, stage - 1, 1.0)
            torch.testing.assert_close(gen(z, stage, 0.0), upsample2x(prev), rtol=0, atol=0)
            # alpha = 1: the new branch alone
            h = z
            for k in range(stage + 1):
                h_prev, h = h, gen.blocks[k](h)
            new = gen.to_rgb[stage](h)
            old = upsample2x(gen.to_rgb[stage - 1](h_prev))
            torch.testing.assert_close(gen(z, stage, 1.0), new)
            torch.testing.assert_close(gen(z, stage, 0.3), 0.7 * old + 0.3 * new)


def test_generator_output_unbounded_and_pixelnorm_on_latent():
    gen = _gen()
    z = torch.randn(2, LATENT)
    with torch.no_grad():
        gen.to_rgb[0].bias.fill_(5.0)  # no tanh: the bias passes straight through
        torch.testing.assert_close(gen(z, 0), gen(z * 10.0, 0))  # latent is pixel-normed
        assert gen(z, 0).max() > 1.0


def test_generator_bad_stage_alpha():
    gen = _gen()
    z = torch.randn(2, LATENT)
    with pytest.raises(ValueError, match="stage"):
        gen(z, 4, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        gen(z, 1, 1.5)
    with pytest.raises(ValueError, match="z must have shape"):
        gen(torch.randn(2, LATENT + 1), 0)


def _grad_names(module: torch.nn.Module) -> tuple[set[str], set[str]]:
    with_grad = {
        n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    }
    return with_grad, {n for n, _ in module.named_parameters()} - with_grad


def test_generator_gradient_reaches_current_stage():
    gen = _gen()
    stage = 2
    gen(torch.randn(4, LATENT), stage, 0.5).square().mean().backward()
    with_grad, without = _grad_names(gen)
    for name in [n for n, _ in gen.named_parameters()]:
        idx = int(name.split(".")[1])
        should = idx <= stage if name.startswith("blocks.") else idx in (stage - 1, stage)
        assert (name in with_grad) == should, name
    assert without  # stage-3 params exist but are unused at stage 2


# --------------------------------------------------------------------- discriminator


def _disc(**kw) -> ProGANDiscriminator:
    return ProGANDiscriminator(MAX_RES, channels=CHANNELS, **kw)


def test_discriminator_shapes_every_stage():
    disc = _disc()
    for stage, res in enumerate([4, 8, 16, 32]):
        for alpha in (0.0, 0.5, 1.0):
            scores = disc(torch.randn(4, 3, res, res), stage, alpha)
            assert scores.shape == (4,)
    # batch not divisible by the group size still works (fallback group)
    assert disc(torch.randn(3, 3, 8, 8), 1).shape == (3,)
    with pytest.raises(ValueError, match="image must have shape"):
        disc(torch.randn(4, 3, 16, 16), 1)


def test_discriminator_fade_in_continuity():
    disc = _disc()
    with torch.no_grad():
        for stage in range(1, disc.num_stages):
            res = disc.resolution(stage)
            x = torch.randn(4, 3, res, res)
            old = disc(downsample2x(x), stage - 1, 1.0)
            torch.testing.assert_close(disc(x, stage, 0.0), old, rtol=0, atol=0)
            # alpha = 1: the new branch alone
            h = disc.blocks[stage](disc.from_rgb[stage](x))
            for k in range(stage - 1, 0, -1):
                h = disc.blocks[k](h)
            torch.testing.assert_close(disc(x, stage, 1.0), disc.blocks[0](h, None))


def test_discriminator_blur_gives_stylegans_block_blur_conv_downsample_then_lrelu():
    """StyleGAN's D_basic: conv0 -> lrelu, then blur -> conv1 -> downsample -> lrelu (ProGAN's
    critic, the default, has no blur and downsamples after the activation)."""
    plain, blurred = _disc(), _disc(blur=True)
    blurred.load_state_dict(plain.state_dict())  # same parameters: only the resampling differs
    assert plain.blur is False and blurred.blur is True
    x = torch.randn(2, CHANNELS[1], 8, 8)
    block = blurred.blocks[1]
    h = F.leaky_relu(block.conv1(x), 0.2)
    expected = F.leaky_relu(downsample2x(block.conv2(Blur()(h))), 0.2)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)
        torch.testing.assert_close(plain.blocks[1](x), downsample2x(F.leaky_relu(block.conv2(h), 0.2)))
        image = torch.randn(4, 3, MAX_RES, MAX_RES)
        assert not torch.allclose(blurred(image, 3), plain(image, 3))


def test_conditional_discriminator():
    disc = _disc(condition_dim=10, condition_channels=4)
    x = torch.randn(4, 3, 16, 16)
    c1, c2 = torch.randn(4, 10), torch.randn(4, 10)
    with torch.no_grad():
        s1 = disc(x, 2, 0.5, condition=c1)
        s2 = disc(x, 2, 0.5, condition=c2)
    assert s1.shape == (4,)
    assert not torch.allclose(s1, s2)
    # alpha = 0 continuity holds with a condition too
    with torch.no_grad():
        torch.testing.assert_close(
            disc(x, 2, 0.0, c1), disc(downsample2x(x), 1, 1.0, c1), rtol=0, atol=0
        )
    with pytest.raises(ValueError, match="condition"):
        disc(x, 2, 0.5)
    with pytest.raises(ValueError, match="condition"):
        disc(x, 2, 0.5, condition=torch.randn(4, 9))
    with pytest.raises(ValueError, match="condition_dim=0"):
        _disc()(x, 2, 0.5, condition=c1)


def test_discriminator_image_embedding_reads_the_image_alone():
    disc = _disc(condition_dim=6, embed_dim=5)
    x = torch.randn(4, 3, 16, 16)
    embedding = lambda images, stage, alpha=1.0: disc.embed(disc.features(images, stage, alpha))  # noqa: E731
    with torch.no_grad():
        emb = embedding(x, 2, 0.5)
        assert emb.shape == (4, 5)
        c, c2 = torch.randn(4, 6), torch.randn(4, 6)
        features = disc.features(x, 2, 0.5)  # one pass serves every condition and the embedding
        assert torch.equal(disc.head(features, c), disc(x, 2, 0.5, c))
        assert torch.equal(disc.head(features, c2), disc(x, 2, 0.5, c2))
        # the same continuity as the scores: alpha = 0 is the previous stage on the downsampled image
        torch.testing.assert_close(embedding(x, 2, 0.0), embedding(downsample2x(x), 1), rtol=0, atol=0)
        # and each image's embedding is its own: no minibatch statistics leak in
        torch.testing.assert_close(embedding(x[:1], 2, 0.5), emb[:1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="embed_dim=0"):
        _disc(condition_dim=6).embed(features)
    with pytest.raises(ValueError, match="embed_dim"):
        _disc(embed_dim=-1)


@pytest.mark.parametrize("conditioning", ["concat", "projection"])
def test_discriminator_gradient_reaches_current_stage_and_condition(conditioning):
    disc = _disc(condition_dim=6, conditioning=conditioning)
    stage = 2
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    cond = torch.randn(4, 6, requires_grad=True)
    disc(x, stage, 0.5, cond).sum().backward()
    assert x.grad.abs().sum() > 0 and cond.grad.abs().sum() > 0
    with_grad, _ = _grad_names(disc)
    for name in [n for n, _ in disc.named_parameters()]:
        idx = int(name.split(".")[1])
        should = idx <= stage if name.startswith("blocks.") else idx in (stage - 1, stage)
        assert (name in with_grad) == should, name
    assert any(("condition_proj" if conditioning == "concat" else "condition_embed") in n for n in with_grad)


def test_projection_critic_adds_the_features_inner_product_with_the_embedded_caption():
    """conditioning=projection: score(x, c) = out(phi(x)) + <phi(x), E c> / sqrt(C), with phi the
    final block's features, which do not depend on the caption (unlike concat's)."""
    disc = _disc(condition_dim=6, conditioning="projection")
    final = disc.blocks[0]
    assert final.condition_proj is None and final.conv.weight.shape[1] == CHANNELS[0] + 1  # no caption channels
    x, c = torch.randn(5, 3, 16, 16), torch.randn(5, 6)
    with torch.no_grad():
        features = disc.features(x, 2, 0.5)
        phi = final.act(final.conv4x4(final.act(final.conv(final.mbstd(features))))).flatten(1)
        embedded = c @ final.condition_embed.effective_weight().T + final.condition_embed.effective_bias()
        expected = final.out(phi).squeeze(1) + (phi * embedded).sum(1) / math.sqrt(CHANNELS[0])
        torch.testing.assert_close(disc.head(features, c), expected)
        # with the caption's embedding at zero the critic is the unconditional one
        final.condition_embed.weight.zero_()
        final.condition_embed.bias.zero_()
        torch.testing.assert_close(disc.head(features, c), final.out(phi).squeeze(1))
    with pytest.raises(ValueError, match="model.discriminator.conditioning='film'"):
        _disc(condition_dim=6, conditioning="film")


@pytest.mark.parametrize("conditioning", ["concat", "projection"])
def test_critic_learns_which_caption_an_image_matches(conditioning):
    """The matching-aware objective (logistic, which keeps the test short) on images whose colour
    their caption sets: after a few hundred steps the critic scores images under their own
    captions above the same images under another caption's, with either way of reading it."""
    disc = _disc(condition_dim=4, conditioning=conditioning)
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.0, 0.99))

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        label = torch.randint(0, 4, (n,))
        caption = F.one_hot(label, 4).float()
        image = torch.randn(n, 3, 4, 4) * 0.3 + (label.float() / 1.5 - 1.0)[:, None, None, None]
        other = F.one_hot((label + torch.randint(1, 4, (n,))) % 4, 4).float()
        return image, caption, other

    for _ in range(300):
        image, caption, other = batch(32)
        features = disc.features(image, 0)
        loss = F.softplus(-disc.head(features, caption)).mean() + F.softplus(disc.head(features, other)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    image, caption, other = batch(256)
    with torch.no_grad():
        features = disc.features(image, 0)
        matched, mismatched = disc.head(features, caption), disc.head(features, other)
    assert (matched > mismatched).float().mean() > 0.9
