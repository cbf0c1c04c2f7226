"""The text component's terms (contrastive, word prediction), mismatched captions and the
generator-step terms that read captions (mode seeking, GAN-INT's interpolated captions)."""

from __future__ import annotations

import math

import pytest
import torch

from t2f.losses import caption_words, word_prediction_loss
from t2f.modules.text import TextConditioner
from tests.helpers import t2f_module

VOCAB = 30


def _module(weight: float = 1.0, temperature: float = 0.1, words: float = 0.0, image_words: float = 0.0,
            **module: object):
    return t2f_module(VOCAB, text={"contrastive": {"weight": weight, "temperature": temperature},
                                   "word_prediction": {"text": words, "image": image_words}}, **module)


def _batch(n: int = 8) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    captions = torch.randint(1, VOCAB, (n, 5), generator=gen)
    captions[1] = captions[0]  # one sentence twice: not a negative of itself
    return {"image": torch.randn(n, 3, 8, 8, generator=gen), "caption": captions,
            "caption_length": torch.full((n,), 5)}


def _critic_terms(module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text component's critic-step terms for the batch's real faces."""
    conditions = module.conditions(batch)
    terms = module.text.caption_terms(conditions)
    if module.text.reads_image_embedding:
        features = module.discriminator.features(batch["image"])
        terms.update(module.text.image_terms(module.discriminator.embed(features), conditions))
    return terms


def _train_critic_term(module, batch: dict[str, torch.Tensor], name: str, steps: int,
                       optimizer: torch.optim.Optimizer) -> list[float]:
    """Steps on one critic-step term alone (the only one the text component computes); its values."""
    losses = []
    for _ in range(steps):
        terms = _critic_terms(module, batch)
        assert set(terms) == {name}
        optimizer.zero_grad()
        terms[name].backward()
        optimizer.step()
        losses.append(terms[name].item())
    return losses


def _critic_param_groups(module) -> list[dict]:
    return module.text.param_groups(list(module.discriminator.parameters()))


def test_conditions_mark_repeated_captions():
    same = _module().conditions(_batch())["same_caption"]
    assert same[0, 1] and same[1, 0] and same.diagonal().all()
    assert same.sum() == 8 + 2


def test_critic_term_trains_the_text_encoder_and_critic_to_match_captions_to_faces():
    torch.manual_seed(0)
    module, batch = _module(), _batch()
    losses = _train_critic_term(module, batch, "contrastive", 60,
                                torch.optim.Adam([p for g in _critic_param_groups(module) for p in g["params"]], lr=3e-3))
    assert module.text.encoder.embedding.weight.grad.abs().sum() > 0
    assert module.discriminator.image_embed.weight.grad.abs().sum() > 0
    # log(7) is chance with 7 candidates per row; after training each face finds its caption
    assert losses[0] > 1.0 and losses[-1] < 0.2 * losses[0]


def test_critic_step_holds_every_text_term_once():
    torch.manual_seed(0)
    module, batch = _module(weight=0.5, words=1.0, image_words=1.0), _batch()
    _, parts = module.loss.critic_loss(module.players(module.growth), batch["image"], module.conditions(batch))
    assert set(parts) == {"adv", "gp", "drift", "contrastive", "image_words", "text_words"} - {"drift"}


def test_generator_term_reaches_the_generator_but_not_the_text_encoder():
    torch.manual_seed(0)
    module, batch = _module(weight=0.5), _batch()
    with torch.no_grad():
        conditions = module.conditions(batch)
    _, terms = module.loss.generator_loss(module.players(module.growth), 8, conditions, torch.device("cpu"))
    assert set(terms) == {"adv", "contrastive", "kl"}
    terms["contrastive"].backward(retain_graph=True)
    assert all(p.grad is None for p in module.text.encoder.parameters())
    assert module.generator.generator.to_rgb[1].weight.grad.abs().sum() > 0


def test_generator_share_scales_only_the_generator_steps_term():
    batch = _batch()
    full = t2f_module(VOCAB, text={"contrastive": {"weight": 0.5}})
    half = t2f_module(VOCAB, text={"contrastive": {"weight": 0.5, "generator": 0.5}})
    critic_only = t2f_module(VOCAB, text={"contrastive": {"weight": 0.5, "generator": 0.0}})
    for module in (half, critic_only):
        module.load_state_dict(full.state_dict())
    conditions = full.conditions(batch)
    embedding = full.discriminator.embed(full.discriminator.features(batch["image"]))
    on_real = full.text.image_terms(embedding, conditions)["contrastive"]
    assert on_real.item() > 0
    # real faces (the critic step): the full weight whatever the generator's share
    for module in (half, critic_only):
        assert torch.equal(module.text.image_terms(embedding, conditions)["contrastive"], on_real)
    # the same images scored as fakes (the generator step): the share of it, or no term at all
    assert torch.allclose(half.text.image_terms(embedding, conditions, fakes=True)["contrastive"], 0.5 * on_real)
    assert critic_only.text.image_terms(embedding, conditions, fakes=True) == {}
    torch.manual_seed(0)
    _, terms = critic_only.loss.generator_loss(critic_only.players(critic_only.growth), 8,
                                               critic_only.conditions(batch), torch.device("cpu"))
    assert set(terms) == {"adv", "kl"}
    _, parts = critic_only.loss.critic_loss(critic_only.players(critic_only.growth), batch["image"],
                                            critic_only.conditions(batch))
    assert "contrastive" in parts
    with pytest.raises(ValueError, match="model.text.contrastive.generator"):
        t2f_module(VOCAB, text={"contrastive": {"weight": 0.5, "generator": -1.0}})


def test_weight_zero_builds_no_image_embedding_and_bad_settings_are_named():
    module = _module(weight=0.0)
    assert module.discriminator.image_embed is None and not module.text.reads_image_embedding
    assert _critic_terms(module, _batch()) == {}
    _, terms = module.loss.generator_loss(module.players(module.growth), 8, module.conditions(_batch()), "cpu")
    assert set(terms) == {"adv", "kl"}
    with pytest.raises(ValueError, match="model.text.contrastive.weight"):
        _module(weight=-1.0)
    with pytest.raises(ValueError, match="model.text.contrastive.temperature"):
        _module(temperature=0.0)
    with pytest.raises(ValueError, match="unknown keys \\['wieght'\\]"):
        TextConditioner(VOCAB, contrastive={"wieght": 1.0})


def test_nearest_mismatch_pairs_each_face_with_the_closest_other_caption():
    condition = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 1.0]])
    same = torch.eye(5, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    conditions = {"text_embedding": condition, "same_caption": same}
    # 0 and 1 are the same sentence, so neither is the other's mismatch; 2 is closest to both
    assert torch.equal(TextConditioner(VOCAB, mismatch="nearest").mismatched(conditions), condition[[2, 2, 0, 4, 3]])
    assert torch.equal(TextConditioner(VOCAB, mismatch="shifted").mismatched(conditions), condition[[4, 0, 1, 2, 3]])
    assert TextConditioner(VOCAB, mismatch="none").mismatched(conditions) is None  # the loss then has no mismatch term
    with pytest.raises(ValueError, match="model.text.mismatch='random': choose one of shifted, nearest, none"):
        TextConditioner(VOCAB, mismatch="random")
    for weight in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match=r"model.text.mismatch_weight=.* must be in \(0, 1\)"):
            TextConditioner(VOCAB, mismatch_weight=weight)


def test_word_prediction_trains_the_text_encoder_to_keep_every_word():
    torch.manual_seed(0)
    module, batch = _module(weight=0.0, words=1.0), _batch()
    optimizer = torch.optim.Adam(_critic_param_groups(module), lr=1e-2)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in module.text.text_words.parameters()} <= trained  # trained by the critic step
    losses = _train_critic_term(module, batch, "text_words", 150, optimizer)
    # at the start each of the 26 words is about a coin flip (26 * log 2 ~ 18 per caption);
    # after training the embedding tells which words each caption holds
    assert losses[0] > 10 and losses[-1] < 0.1 * losses[0]
    assert module.text.encoder.embedding.weight.grad.abs().sum() > 0
    logits = module.text.text_words(module.conditions(batch)["text_embedding"])
    present = torch.zeros(8, VOCAB).scatter(1, batch["caption"], 1.0)[:, 4:].bool()
    assert ((logits > 0) == present).all()


def test_image_word_prediction_trains_the_critic_on_real_faces_and_scores_fakes_for_the_generator():
    torch.manual_seed(0)
    module, batch = _module(weight=0.0, image_words=1.0), _batch()
    assert module.discriminator.image_embed is not None  # the head needs the image embedding
    optimizer = torch.optim.Adam(_critic_param_groups(module), lr=1e-2)
    losses = _train_critic_term(module, batch, "image_words", 100, optimizer)
    assert module.discriminator.image_embed.weight.grad.abs().sum() > 0
    assert module.text.encoder.embedding.weight.grad is None  # the words come from the tokens
    assert losses[-1] < 0.1 * losses[0]  # each face tells which words its caption holds
    # the generator's term: its fakes scored by the same head, from the pass that scores them
    module.zero_grad(set_to_none=True)
    with torch.no_grad():
        conditions = module.conditions(batch)
    _, terms = module.loss.generator_loss(module.players(module.growth), 8, conditions, torch.device("cpu"))
    assert set(terms) == {"adv", "image_words", "kl"}
    terms["image_words"].backward()
    assert module.generator.generator.to_rgb[1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.text.encoder.parameters())


def test_image_words_real_target_tracks_real_faces_and_asks_fakes_for_their_rates_not_certainty():
    torch.manual_seed(0)
    text = TextConditioner(VOCAB, word_prediction={"image": 1.0, "image_target": "real"})
    first, words = 4, VOCAB - 4
    captions = torch.tensor([[4, 5, 0], [4, 6, 0], [7, 0, 0]])  # word 0 (id 4) in two captions, word 3 in one
    present = caption_words(captions, first, words)
    logits = torch.zeros(3, words)
    logits[:, 0] = torch.tensor([2.0, 0.0, -1.0])
    text.track_real_words(logits, present)
    sig = torch.sigmoid(torch.tensor([2.0, 0.0, -1.0]))
    with_word = ((sig[0] + sig[1]) / 2).item()  # rate on its two faces with the word; the third lacks it

    def targets(probability: float, present: float) -> torch.Tensor:
        return text.real_word_targets(torch.full((1, words), torch.tensor(probability).logit().item()),
                                      torch.full((1, words), present))[0]

    assert targets(0.5, 1.0)[0].item() == pytest.approx(with_word)  # asked up to the rate ...
    assert targets(0.99, 1.0)[0].item() == pytest.approx(0.99)  # ... and no further: left where it is
    assert targets(0.9, 0.0)[0].item() == pytest.approx(sig[2].item())  # lacked: pushed down to its rate
    assert targets(0.1, 0.0)[0].item() == pytest.approx(0.1)
    assert targets(0.5, 1.0)[10].item() == 1.0 and targets(0.5, 0.0)[1].item() == pytest.approx(0.5)  # 10: unseen
    # a second batch joins the first at weight 1 against the first's 0.99
    text.track_real_words(torch.full((1, words), 50.0), torch.ones(1, words))
    expected = (0.99 * (sig[0] + sig[1]) + 1.0) / (0.99 * 2 + 1)
    assert targets(0.5, 1.0)[0].item() == pytest.approx(expected.item())
    assert {"real_word_sums", "real_word_counts"} <= set(text.state_dict())  # resumed runs keep the rates

    # a fake's word logit, trained by the generator's term alone: the real target stops at real
    # faces' rate, the caption's target (1) drives it on towards certainty
    rate = expected.item()
    for target, runs_away in (("real", False), ("caption", True)):
        head = TextConditioner(VOCAB, word_prediction={"image": 1.0, "image_target": target})
        head.load_state_dict(text.state_dict(), strict=False)
        fake = torch.zeros(1, head.output_dim, requires_grad=True)
        optimizer = torch.optim.SGD([fake], lr=0.5)
        conditions = {"caption": torch.tensor([[4, 0, 0]])}
        for _ in range(300):
            optimizer.zero_grad()
            head.image_terms(fake, conditions, fakes=True)["image_words"].backward()
            optimizer.step()
        probability = torch.sigmoid(head.image_words(fake))[0, 0].item()
        assert (probability > 0.95) if runs_away else probability == pytest.approx(rate, abs=0.01)  # rate: 0.82


def test_image_words_real_target_learns_rates_in_the_critic_step_and_uses_them_in_the_generator_step():
    torch.manual_seed(0)
    module = t2f_module(VOCAB, text={"word_prediction": {"image": 1.0, "image_target": "real"}})
    batch, players = _batch(), module.players(module.growth)
    with torch.no_grad():
        conditions = module.conditions(batch)
    assert module.text.real_word_counts.sum() == 0
    module.loss.critic_loss(players, batch["image"], conditions)
    assert torch.equal(module.text.real_word_counts.sum(0), torch.full((VOCAB - 4,), 8.0))  # every face, once
    _, terms = module.loss.generator_loss(players, 8, conditions, torch.device("cpu"))
    counts = module.text.real_word_counts.clone()
    terms["image_words"].backward()
    assert module.generator.generator.to_rgb[1].weight.grad.abs().sum() > 0
    assert torch.equal(module.text.real_word_counts, counts)  # fakes never join the real faces' rates


def test_image_words_twin_target_is_the_real_heads_loss_minus_the_twins_on_fakes():
    torch.manual_seed(0)
    text = TextConditioner(VOCAB, word_prediction={"image": 0.5, "image_target": "twin"})
    embedding, conditions = torch.randn(3, text.output_dim), {"caption": torch.tensor([[4, 5, 0], [4, 0, 0], [9, 0, 0]])}
    present = caption_words(conditions["caption"], 4, VOCAB - 4)

    def bce(head: torch.nn.Linear) -> torch.Tensor:  # by hand: summed over words, mean over faces
        p = head(embedding).sigmoid()
        return -(present * p.log() + (1 - present) * (1 - p).log()).sum() / 3

    fake = text.image_terms(embedding, conditions, fakes=True)["image_words"]
    assert fake.item() == pytest.approx(0.5 * (bce(text.image_words) - bce(text.fake_words)).item(), rel=1e-4)
    assert text.image_terms(embedding, conditions)["image_words"].item() == pytest.approx(  # real faces: as before
        0.5 * bce(text.image_words).item(), rel=1e-4)
    assert text.fake_image_terms(embedding, conditions)["image_words_twin"].item() == pytest.approx(
        0.5 * bce(text.fake_words).item(), rel=1e-4)
    # a twin that reads the fakes as the real head does: no term, no push
    text.fake_words.load_state_dict(text.image_words.state_dict())
    moved = embedding.clone().requires_grad_(True)
    text.image_terms(moved, conditions, fakes=True)["image_words"].backward()
    assert moved.grad.abs().max().item() < 1e-6
    assert TextConditioner(VOCAB, word_prediction={"image": 1.0}).fake_words is None  # caption: no twin


def test_image_words_twin_target_draws_a_word_as_real_faces_show_it_where_the_caption_target_overshoots():
    """A one-number generator: fakes for captions with a word are ``mu`` plus noise along one axis
    of the image embedding, real faces with it N(1, 1) and without it N(-1, 1). The real head learns
    from real faces, the twin from fakes, the generator steps on the fakes' word term. With the
    caption's target (AC-GAN) ``mu`` runs past the real faces; with the twin (TAC-GAN) it stops at them."""
    final = {}
    for target in ("caption", "twin"):
        torch.manual_seed(0)
        text = TextConditioner(VOCAB, word_prediction={"image": 1.0, "image_target": target})
        mu = torch.zeros((), requires_grad=True)
        heads = torch.optim.Adam(text.param_groups([])[0]["params"], lr=0.05)  # the word head and its twin
        generator = torch.optim.Adam([mu], lr=0.02)
        with_word = {"caption": torch.tensor([[4, 0]] * 64)}
        both = {"caption": torch.tensor([[4, 0]] * 64 + [[5, 0]] * 64)}  # the first 64 with the word, the rest without

        def faces(mean: torch.Tensor, dim: int = text.output_dim) -> torch.Tensor:
            axis = torch.zeros(64, dim)
            axis[:, 0] = mean + torch.randn(64)
            return axis

        for _ in range(600):
            real = torch.cat([faces(torch.tensor(1.0)), faces(torch.tensor(-1.0))])
            fake = torch.cat([faces(mu.detach()), faces(torch.tensor(-1.0))])
            terms = {**text.image_terms(real, both), **text.fake_image_terms(fake, both)}
            heads.zero_grad()
            sum(terms.values()).backward()
            heads.step()
            generator.zero_grad()
            text.image_terms(faces(mu), with_word, fakes=True)["image_words"].backward()
            generator.step()
        final[target] = mu.item()
    assert final["caption"] > 2.5  # drawn far more strongly than real faces show it
    assert final["twin"] == pytest.approx(1.0, abs=0.35)


def test_image_words_twin_target_trains_the_twin_on_fakes_in_the_critic_step():
    torch.manual_seed(0)
    module = t2f_module(VOCAB, text={"word_prediction": {"image": 1.0, "image_target": "twin"}})
    batch, players = _batch(), module.players(module.growth)
    assert any(p is module.text.fake_words.weight for group in _critic_param_groups(module) for p in group["params"])
    with torch.no_grad():
        conditions = module.conditions(batch)
    _, parts = module.loss.critic_loss(players, batch["image"], conditions)
    parts["image_words_twin"].backward()  # the fakes' words: the twin (and the critic under it) learn them
    assert module.text.fake_words.weight.grad.abs().sum() > 0 and module.text.image_words.weight.grad is None
    assert module.discriminator.image_embed.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.generator.parameters())  # the critic step's fakes are fixed
    module.zero_grad(set_to_none=True)
    parts["image_words"].backward()  # the real faces' words: the real head alone
    assert module.text.image_words.weight.grad.abs().sum() > 0 and module.text.fake_words.weight.grad is None
    _, terms = module.loss.generator_loss(players, 8, conditions, torch.device("cpu"))
    assert "image_words_twin" not in terms
    terms["image_words"].backward()
    assert module.generator.generator.to_rgb[1].weight.grad.abs().sum() > 0


def _word_reader(resolution: int = 8, embed_dim: int = 16):
    from t2f.nets.progan import ProGANDiscriminator

    return ProGANDiscriminator(resolution, fmap_base=32, fmap_max=16, mbstd_num_features=0, embed_dim=embed_dim)


def test_a_word_reader_gives_the_word_heads_their_own_network_and_leaves_the_critic_to_the_contrastive_term():
    torch.manual_seed(0)
    words = {"image": 1.0, "image_target": "twin"}
    module = t2f_module(VOCAB, text={"word_prediction": words, "word_reader": _word_reader()})
    reader = module.text.word_reader
    assert module.discriminator.image_embed is None  # no term reads the critic's embedding now
    critic_group = _critic_param_groups(module)[0]["params"]
    assert all(any(p is q for q in critic_group) for p in reader.parameters())  # trained in the critic step
    batch, players = _batch(), module.players(module.growth)
    with torch.no_grad():
        conditions = module.conditions(batch)
    _, parts = module.loss.critic_loss(players, batch["image"], conditions)
    (parts["image_words"] + parts["image_words_twin"]).backward()
    assert reader.from_rgb[-1][0].weight.grad.abs().sum() > 0 and reader.image_embed.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.discriminator.parameters())  # the critic learns nothing of words
    # the heads read the reader's embedding of the images the critic scored
    embedding = reader.embed(reader.features(batch["image"]))
    expected = module.text.image_terms(None, conditions, word_embedding=embedding)["image_words"]
    assert parts["image_words"].item() == pytest.approx(expected.item(), rel=1e-5)
    module.zero_grad(set_to_none=True)
    _, terms = module.loss.generator_loss(players, 8, conditions, torch.device("cpu"))
    terms["image_words"].backward()  # the generator is scored by the reader's heads
    assert module.generator.generator.to_rgb[1].weight.grad.abs().sum() > 0


def test_a_word_reader_with_the_contrastive_term_splits_the_embeddings_and_grows_with_the_critic():
    torch.manual_seed(0)
    module = t2f_module(VOCAB, text={"contrastive": {"weight": 1.0}, "word_prediction": {"image": 1.0},
                                     "word_reader": _word_reader()},
                        schedule={"start_resolution": 4, "kimg": 1})
    assert module.stage == 0  # 4 px: the reader reads the same small images as the critic
    batch, players = _batch(), module.players(module.growth)
    batch["image"] = torch.nn.functional.avg_pool2d(batch["image"], 2)
    with torch.no_grad():
        conditions = module.conditions(batch)
    _, parts = module.loss.critic_loss(players, batch["image"], conditions)
    parts["image_words"].backward()
    assert module.discriminator.image_embed.weight.grad is None and module.text.word_reader.image_embed.weight.grad is not None
    module.zero_grad(set_to_none=True)
    parts["contrastive"].backward()
    assert module.discriminator.image_embed.weight.grad.abs().sum() > 0 and module.text.word_reader.image_embed.weight.grad is None


def test_a_word_reader_that_does_not_fit_is_named():
    from t2f.modules.gan import GANModule

    with pytest.raises(ValueError, match="model.text.word_reader is the image word head's network: set "
                                         "model.text.word_prediction.image > 0"):
        TextConditioner(VOCAB, word_reader=_word_reader())
    with pytest.raises(ValueError, match="model.text.word_reader.embed_dim=8 must be the caption embedding's size, 256"):
        TextConditioner(VOCAB, word_prediction={"image": 1.0}, word_reader=_word_reader(embed_dim=8))
    module = t2f_module(VOCAB, text={"word_prediction": {"image": 1.0}, "word_reader": _word_reader()})
    text = TextConditioner(VOCAB, encoder={"embedding_dim": 8, "hidden_dim": 16}, word_prediction={"image": 1.0},
                           word_reader=_word_reader(resolution=16))
    with pytest.raises(ValueError, match="model.text.word_reader is built for 16 px"):
        GANModule(module.generator, module.discriminator, module.loss, text=text, schedule=module.schedule)


def test_word_balance_moves_weight_from_common_words_to_rare_ones_without_adding_to_it():
    text = TextConditioner(VOCAB, word_prediction={"text": 1.0, "balance": 1.0})
    words = VOCAB - 4
    logits, present = torch.zeros(1, words), torch.zeros(1, words)
    present[0, :3] = 1.0
    plain = word_prediction_loss(logits, present)
    assert text.word_loss(logits, present).item() == plain.item()  # nothing counted yet: weights of 1
    # word 0 (id 4) in 2 of 4 captions, word 1 (id 5) in 1 of 4, word 2 (id 6) in none
    text.count_caption_words({"caption": torch.tensor([[4, 5, 0], [4, 0, 0], [7, 0, 0], [8, 0, 0]])})
    assert text.captions_counted.item() == 4 and text.caption_word_counts[:3].tolist() == [2.0, 1.0, 0.0]
    # odds of absence 1, 3 and 100 (an unseen word's rate counts as 0.01), over their mean on the
    # counted words, (0.5 * 1 + 0.25 * 3 + 0.25 * 3 + 0.25 * 3) / 1.25 = 2.2, words 3 and 4 (ids 7,
    # 8) being in one caption each
    mean = (0.5 * 1 + 0.25 * 3 + 0.25 * 3 + 0.25 * 3) / 1.25
    weights = torch.tensor([1.0, 3.0, 100.0]) / mean
    # at logit 0 each term is log 2: a present word's term is its weight times log 2
    expected = plain + (weights - 1).sum() * math.log(2)
    assert text.word_loss(logits, present).item() == pytest.approx(expected.item(), rel=1e-5)
    # the counted captions' words weigh as much in all as without the balance
    counted = caption_words(torch.tensor([[4, 5, 0], [4, 0, 0], [7, 0, 0], [8, 0, 0]]), 4, words)
    assert text.word_loss(torch.full((4, words), -50.0), counted).item() == pytest.approx(
        word_prediction_loss(torch.full((4, words), -50.0), counted).item(), rel=1e-5)
    half = TextConditioner(VOCAB, word_prediction={"text": 1.0, "balance": 0.5})
    half.load_state_dict(text.state_dict())
    odds = torch.tensor([1.0, 3.0, 100.0]) ** 0.5
    weights = odds / ((0.5 * 1 + 3 * 0.25 * 3 ** 0.5) / 1.25)
    expected = plain + (weights - 1).sum() * math.log(2)
    assert half.word_loss(logits, present).item() == pytest.approx(expected.item(), rel=1e-5)
    off = TextConditioner(VOCAB, word_prediction={"text": 1.0})
    assert off.word_loss(logits, present).item() == plain.item()
    assert "caption_word_counts" not in off.state_dict()  # nothing counted, nothing saved
    with pytest.raises(ValueError, match="model.text.word_prediction.balance=-1.0 must be >= 0"):
        TextConditioner(VOCAB, word_prediction={"text": 1.0, "balance": -1.0})


def test_word_balance_counts_the_real_captions_once_per_critic_step_and_never_the_generators():
    torch.manual_seed(0)
    module = t2f_module(VOCAB, text={"word_prediction": {"text": 1.0, "image": 1.0, "image_target": "twin",
                                                         "balance": 1.0}})
    batch, players = _batch(), module.players(module.growth)
    with torch.no_grad():
        conditions = module.conditions(batch)
    module.loss.critic_loss(players, batch["image"], conditions)
    assert module.text.captions_counted.item() == 8
    assert torch.equal(module.text.caption_word_counts, caption_words(batch["caption"], 4, VOCAB - 4).sum(0))
    counts = module.text.state_dict()
    _, terms = module.loss.generator_loss(players, 8, conditions, torch.device("cpu"))
    terms["image_words"].backward()
    assert module.generator.generator.to_rgb[1].weight.grad.abs().sum() > 0
    assert all(torch.equal(counts[k], v) for k, v in module.text.state_dict().items() if "count" in k)


def test_word_prediction_zero_builds_no_heads_and_bad_settings_are_named():
    module = _module(weight=0.0)
    assert module.text.text_words is None and module.text.image_words is None
    assert module.discriminator.image_embed is None  # nothing reads an image embedding
    with pytest.raises(ValueError, match="model.text.word_prediction.text"):
        _module(words=-1.0)
    with pytest.raises(ValueError, match="unknown keys \\['imgae'\\]"):
        TextConditioner(VOCAB, word_prediction={"imgae": 1.0})
    with pytest.raises(ValueError, match="model.text.word_prediction.image_target='fake': choose one of caption, real, twin"):
        TextConditioner(VOCAB, word_prediction={"image": 1.0, "image_target": "fake"})


def test_a_text_term_that_reads_the_image_embedding_needs_the_critic_to_have_one():
    from t2f.modules.gan import GANModule

    module = _module(weight=0.0)
    text = TextConditioner(VOCAB, encoder={"embedding_dim": 8, "hidden_dim": 16}, contrastive={"weight": 1.0})
    with pytest.raises(ValueError, match="model.discriminator.embed_dim=16"):
        GANModule(module.generator, module.discriminator, module.loss, text=text, schedule=module.schedule)


def test_mode_seeking_loss_matches_hand_values() -> None:
    from t2f.losses import mode_seeking_loss

    images = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.0], [1.0, 0.0]])  # pairs (0, 2) and (1, 3)
    latents = torch.tensor([[0.0], [0.0], [2.0], [2.0]])
    # mean |x1 - x2| = (0.5 + 0 + 0 + 1) / 4 = 0.375; mean |l1 - l2| = 2
    assert float(mode_seeking_loss(images, latents)) == pytest.approx(1 / (0.375 / 2 + 1e-5))


def test_mode_seeking_pairs_captions_and_pushes_one_captions_faces_apart() -> None:
    from t2f.gan_loss import _paired

    torch.manual_seed(0)
    module = _module(weight=0.0, loss={"mode_seeking": 1.0})
    with torch.no_grad():
        conditions = module.conditions(_batch())
    paired = _paired(conditions, 8)
    emb = paired["text_embedding"]
    assert torch.equal(emb[:4], emb[4:]) and not torch.equal(emb[0], emb[2])  # captions 0-3, twice
    assert paired["same_caption"][0, 4] and paired["same_caption"].shape == (8, 8)
    optimizer = torch.optim.Adam(module.generator.parameters(), lr=0.01)
    players = module.players(module.growth)
    gaps = []
    for _ in range(30):
        torch.manual_seed(len(gaps))
        _, terms = module.loss.generator_loss(players, 8, conditions, torch.device("cpu"))
        torch.manual_seed(len(gaps))  # the same draws: the fakes the term was computed on
        with torch.no_grad():
            images = players.fakes(8, emb, torch.device("cpu"), with_noise=True)[0]
        optimizer.zero_grad()
        terms["mode_seeking"].backward()
        optimizer.step()
        gaps.append(float((images[:4] - images[4:]).abs().mean()))
    assert gaps[-1] > 1.5 * gaps[0], gaps  # the same caption's faces moved apart
    with pytest.raises(ValueError, match="model.loss.mode_seeking"):
        _module(loss={"mode_seeking": -1.0})


def test_text_interpolation_scores_fakes_for_the_midpoints_of_two_captions() -> None:
    torch.manual_seed(0)
    module = _module(weight=0.0, loss={"text_interpolation": 0.5})
    with torch.no_grad():
        conditions = module.conditions(_batch())
    seen = []
    head = module.discriminator.head
    module.discriminator.head = lambda f, c: (seen.append(c.detach().clone()), head(f, c))[1]
    _, terms = module.loss.generator_loss(module.players(module.growth), 8, conditions, torch.device("cpu"))
    assert {"adv", "kl", "interpolated", "interpolated_kl"} == set(terms)
    emb = conditions["text_embedding"]
    torch.testing.assert_close(seen[-1], (emb + emb.roll(1, 0)) / 2)  # beta = 0.5 between neighbours
    terms["interpolated"].backward()
    assert module.generator.generator.to_rgb[1].weight.grad.abs().sum() > 0
