"""Losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from t2f.gan_loss import GANLoss
from t2f.losses import (
    caption_words,
    contrastive_loss,
    drift_penalty,
    g_nonsaturating,
    g_wasserstein,
    gradient_penalty,
    interpolate,
    r1_penalty,
    word_prediction_loss,
)
from t2f.nets.text_encoder import kl_divergence
from tests.helpers import toy_players


def _sp(x: float) -> float:
    return math.log1p(math.exp(x))


def test_nonsaturating_losses_match_hand_values():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    loss = GANLoss("nonsaturating")
    images_real, images_fake = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    critic = lambda x, c=None: real if x.mean() == 0 else fake  # noqa: E731
    total, parts = loss.critic_loss(toy_players(critic, images_fake), images_real, {})
    expected = (_sp(-2.0) + _sp(1.0)) / 2 + (_sp(0.5) + _sp(-3.0)) / 2
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert set(parts) == {"adv"}
    assert g_nonsaturating(fake).item() == pytest.approx((_sp(-0.5) + _sp(3.0)) / 2, rel=1e-6)


def test_hinge_and_wasserstein_match_hand_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-0.5, 1.0])
    critic = lambda x, c=None: real if x.mean() == 0 else fake  # noqa: E731
    zeros, ones = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    hinge, _ = GANLoss("hinge").critic_loss(toy_players(critic, ones), zeros, {})
    # real: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25 ; fake: relu(0.5)=0.5, relu(2)=2 -> 1.25
    assert hinge.item() == pytest.approx(1.5)
    assert g_wasserstein(fake).item() == pytest.approx(-0.25)


def test_matching_aware_terms_weigh_fake_and_mismatch_half_each_unless_told():
    own, other = torch.zeros(1, 2), torch.ones(1, 2)

    def critic(x, c):  # real image + own caption 1, fake image -1, real image + other caption 3
        if x.mean() != 0:
            return torch.tensor([-1.0])
        return torch.tensor([1.0]) if c.mean() == 0 else torch.tensor([3.0])

    loss = GANLoss("wgan_gp", gp_weight=0.0)
    total, parts = loss.critic_loss(toy_players(critic, torch.ones(1, 1, 2, 2), mismatched=other),
                                    torch.zeros(1, 1, 2, 2), {"text_embedding": own})
    # -real + (fake + mismatch) / 2 = -1 + (-1 + 3) / 2 = 0
    assert parts["adv"].item() == pytest.approx(0.0)
    _, parts = loss.critic_loss(toy_players(critic, torch.ones(1, 1, 2, 2), mismatched=other, mismatch_weight=0.25),
                                torch.zeros(1, 1, 2, 2), {"text_embedding": own})
    # -real + 0.75 * fake + 0.25 * mismatch = -1 - 0.75 + 0.75
    assert parts["adv"].item() == pytest.approx(-1.0)


def test_matching_aware_gradient_penalty_covers_images_and_captions():
    # D(x, c) = <w, x> + <v, c>: gradient (w, v) everywhere, joint norm sqrt(3^2 + 4^2 + 12^2) = 13.
    w, v = torch.tensor([3.0, 4.0]), torch.tensor([12.0, 0.0, 0.0])
    critic = lambda x, c: x.flatten(1) @ w + c @ v  # noqa: E731
    real, fake = torch.randn(6, 2, 1, 1), torch.randn(6, 2, 1, 1)
    own, other = torch.randn(6, 3), torch.randn(6, 3)
    loss = GANLoss("wgan_gp", gp_weight=10.0)
    _, parts = loss.critic_loss(toy_players(critic, fake, mismatched=other), real, {"text_embedding": own})
    assert parts["gp"].item() == pytest.approx(10 * (13 - 1) ** 2, rel=1e-5)
    # Without mismatches the condition is not part of the penalised input: only ||w|| = 5 counts.
    _, parts = loss.critic_loss(toy_players(critic, fake), real, {"text_embedding": own})
    assert parts["gp"].item() == pytest.approx(10 * (5 - 1) ** 2, rel=1e-5)


def test_matching_aware_penalty_samples_both_kinds_of_fake_pair():
    seen = []

    def critic(x, c):
        if x.requires_grad:  # the penalty's call
            seen.append((x.detach().clone(), c.detach().clone()))
        return x.flatten(1).sum(1) + c.sum(1)

    real, fake = torch.zeros(8, 1, 1, 1), torch.ones(8, 1, 1, 1)
    own, other = torch.zeros(8, 1), torch.ones(8, 1)
    GANLoss("wgan_gp").critic_loss(toy_players(critic, fake, mismatched=other), real, {"text_embedding": own})
    (images, texts), = seen
    moved_image, moved_text = images.flatten() > 0, texts.flatten() > 0
    assert not (moved_image & moved_text).any()  # each sample moves towards one kind of fake pair
    assert moved_image.sum() >= 3 and moved_text.sum() >= 3  # half the batch each (eps > 0 a.s.)


def test_gradient_penalty_on_linear_critic_with_known_gradient_norm():
    # D(x) = <w, x> has gradient w everywhere: norm 5 -> penalty (5 - 1)^2 = 16.
    w = torch.zeros(1, 2, 2)
    w[0, 0, 0], w[0, 1, 1] = 3.0, 4.0
    x = torch.randn(6, 1, 2, 2, requires_grad=True)
    scores = (x * w).flatten(1).sum(1)
    assert gradient_penalty(scores, x).item() == pytest.approx(16.0)
    assert r1_penalty((x * w).flatten(1).sum(1), x).item() == pytest.approx(25.0)


def test_gradient_penalty_norm_is_over_all_of_chw_per_sample():
    # D(x) = sum(x^2)/2 has gradient x: the per-sample norm is ||x|| over C, H, W.
    x = torch.stack([torch.full((2, 3, 3), 1.0), torch.full((2, 3, 3), 2.0)]).requires_grad_(True)
    scores = 0.5 * x.pow(2).flatten(1).sum(1)
    norms = torch.tensor([math.sqrt(18.0), 2 * math.sqrt(18.0)])
    assert gradient_penalty(scores, x).item() == pytest.approx(((norms - 1) ** 2).mean().item())


def test_wgan_gp_total_includes_penalty_and_drift_and_backprops_once():
    net = torch.nn.Linear(4, 1)
    critic = lambda x, c=None: net(x.flatten(1)).flatten()  # noqa: E731
    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    loss = GANLoss("wgan_gp", gp_weight=10.0, drift_weight=0.001)
    total, parts = loss.critic_loss(toy_players(critic, fake), real, {})
    assert set(parts) == {"adv", "gp", "drift"}
    w_norm = net.weight.norm().item()
    assert parts["gp"].item() == pytest.approx(10 * (w_norm - 1) ** 2, rel=1e-5)
    assert parts["drift"].item() == pytest.approx(0.001 * critic(real).pow(2).mean().item(), rel=1e-5)
    total.backward()
    assert net.weight.grad is not None and torch.isfinite(net.weight.grad).all()


def test_drift_kl_and_interpolation():
    assert drift_penalty(torch.tensor([1.0, 3.0])).item() == pytest.approx(5.0)
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    # 0.5 * [(1 + 1 - 1 - 0) + (2 + 0 - 1 - ln 2)]
    assert kl_divergence(mu, logvar).item() == pytest.approx(0.5 * (1 + 1 - math.log(2)))
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0
    real, fake = torch.zeros(100, 1, 1, 1), torch.ones(100, 1, 1, 1)
    mixed = interpolate(real, fake)
    assert mixed.requires_grad and 0 <= mixed.min() and mixed.max() <= 1
    assert mixed.flatten().unique().numel() > 50  # one epsilon per sample


def test_unknown_loss_name_lists_choices():
    with pytest.raises(ValueError, match="nonsaturating, hinge, wgan_gp"):
        GANLoss("lsgan")


def test_contrastive_loss_matches_hand_values():
    # Orthogonal unit embeddings, temperature 1: every row's logits are (1, 0), so each of the
    # two cross-entropies is -log(e / (e + 1)) = log(1 + e^-1).
    eye = torch.eye(2)
    assert contrastive_loss(eye, eye, temperature=1.0).item() == pytest.approx(math.log1p(math.exp(-1)))
    # Scale does not matter (cosine similarity); temperature does: logits (1/t, 0).
    assert contrastive_loss(3 * eye, 0.5 * eye, temperature=0.5).item() == pytest.approx(
        math.log1p(math.exp(-2)))
    # Images matched to the wrong captions: logits (0, 1) -> log(1 + e).
    assert contrastive_loss(eye.flip(0), eye, temperature=1.0).item() == pytest.approx(math.log1p(math.e))


def test_contrastive_loss_does_not_count_a_repeated_caption_as_a_negative():
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    text = image.clone()  # samples 0 and 1 have the same caption
    same = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    # Row 0 and column 0 each see logits (1, 0) over {self, sample 2}; same for 1; sample 2
    # sees (0, 0, 1) over all three: every one of the six terms is known.
    near = math.log1p(math.exp(-1))
    far = -math.log(math.e / (math.e + 2))
    expected = (2 * near + far) / 3
    assert contrastive_loss(image, text, 1.0, same_caption=same).item() == pytest.approx(expected)
    assert contrastive_loss(image, text, 1.0).item() > expected  # counted as a negative otherwise


def test_word_prediction_loss_matches_hand_values():
    # vocabulary of 4 special ids and 3 words (ids 4, 5, 6); caption 0 holds words 4 and 6
    # (6 twice), caption 1 holds word 5; ids 0-3 (padding, BOS, EOS, UNK) are not words
    captions = torch.tensor([[2, 4, 6, 6, 3], [2, 5, 3, 0, 0]])
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    # -log sigmoid(x) for a present word, -log sigmoid(-x) = softplus(x) for an absent one
    row0 = _sp(-2.0) + _sp(0.0) + _sp(1.0)
    row1 = _sp(0.0) + _sp(-1.0) + _sp(0.0)
    assert torch.equal(caption_words(captions, first_word=4, num_words=3), torch.tensor([[1.0, 0, 1], [0, 1, 0]]))
    assert word_prediction_loss(logits, caption_words(captions, 4, 3)).item() == pytest.approx((row0 + row1) / 2)
    # probabilities as targets: -q log sigmoid(x) - (1 - q) log sigmoid(-x) per word
    soft = torch.tensor([[0.8, 0.1, 0.5], [0.0, 1.0, 0.0]])
    row0 = 0.8 * _sp(-2.0) + 0.2 * _sp(2.0) + 0.1 * _sp(0.0) + 0.9 * _sp(0.0) + 0.5 * _sp(1.0) + 0.5 * _sp(-1.0)
    assert word_prediction_loss(logits, soft).item() == pytest.approx((row0 + row1) / 2)
    # all words absent and predicted absent with certainty: no loss
    none = word_prediction_loss(torch.full((1, 3), -50.0), caption_words(torch.tensor([[2, 3]]), 4, 3))
    assert none.item() == pytest.approx(0.0, abs=1e-12)
    # a presence weight per word scales only the terms of the words a caption holds
    weight = torch.tensor([3.0, 0.5, 2.0])
    row0 = 3.0 * _sp(-2.0) + _sp(0.0) + 2.0 * _sp(1.0)
    row1 = _sp(0.0) + 0.5 * _sp(-1.0) + _sp(0.0)
    assert word_prediction_loss(logits, caption_words(captions, 4, 3), weight).item() == pytest.approx((row0 + row1) / 2)


def test_trunk_reads_the_real_images_once_for_every_condition_and_the_text_terms():
    # critic(x, c) = head(features(x), c): the split gives the same loss as the whole critic, with
    # one pass of the features over the real images (their captions, the mismatched ones, the
    # text terms read from the image embedding).
    calls = []

    def trunk(x):
        calls.append(x)
        return 2 * x.flatten(1)

    head = lambda f, c: f.sum(1) + c @ torch.tensor([1.0, -2.0])  # noqa: E731
    real, fake = torch.randn(4, 1, 1, 2), torch.randn(4, 1, 1, 2)
    own, other = torch.randn(4, 2), torch.randn(4, 2)
    loss = GANLoss("wgan_gp", gp_weight=10.0, drift_weight=0.001)
    torch.manual_seed(0)
    split = toy_players(head, fake, trunk=trunk, mismatched=other, image_terms=lambda f: {"extra": f.pow(2).mean()})
    total, parts = loss.critic_loss(split, real, {"text_embedding": own})
    assert len(calls) == 3  # real, fake, the penalty's interpolates
    assert parts["extra"].item() == pytest.approx((2 * real).pow(2).mean().item())
    torch.manual_seed(0)
    whole_total, whole = loss.critic_loss(toy_players(lambda x, c: head(trunk(x), c), fake, mismatched=other),
                                          real, {"text_embedding": own})
    for name, value in whole.items():
        assert parts[name].item() == pytest.approx(value.item(), rel=1e-6)
    assert total.item() == pytest.approx(whole_total.item() + parts["extra"].item(), rel=1e-6)
