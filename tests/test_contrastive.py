"""The text-conditional models' extra critic terms (contrastive, word prediction) and mismatched captions."""

from __future__ import annotations

import pytest
import torch

from t2f.modules.t2f import T2FModule

VOCAB = 30


def _module(weight: float = 1.0, temperature: float = 0.1, words: float = 0.0,
            image_words: float = 0.0) -> T2FModule:
    module = T2FModule(
        vocab_size=VOCAB, resolution=8, schedule={"kimg": 1}, noise_dim=8,
        condition_dim=8, text_encoder={"embedding_dim": 8, "hidden_dim": 16, "num_layers": 1},
        fmap_base=32, fmap_max=16, contrastive={"weight": weight, "temperature": temperature},
        word_prediction={"text": words, "image": image_words},
    )
    module.stage, module.alpha = 1, 1.0
    return module


def _batch(n: int = 8) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    captions = torch.randint(1, VOCAB, (n, 5), generator=gen)
    captions[1] = captions[0]  # one sentence twice: not a negative of itself
    return {"image": torch.randn(n, 3, 8, 8, generator=gen), "caption": captions,
            "caption_length": torch.full((n,), 5)}


def _train_critic_term(module: T2FModule, batch: dict[str, torch.Tensor], name: str, steps: int,
                       optimizer: torch.optim.Optimizer) -> list[float]:
    """Steps on one critic-step term alone (the only one the module computes); its values."""
    losses = []
    for _ in range(steps):
        terms = module.extra_d_terms(module.critic_trunk(batch["image"]), module.conditions(batch))
        assert set(terms) == {name}
        optimizer.zero_grad()
        terms[name].backward()
        optimizer.step()
        losses.append(terms[name].item())
    return losses


def test_conditions_mark_repeated_captions():
    same = _module().conditions(_batch())["same_caption"]
    assert same[0, 1] and same[1, 0] and same.diagonal().all()
    assert same.sum() == 8 + 2


def test_critic_term_trains_the_text_encoder_and_critic_to_match_captions_to_faces():
    torch.manual_seed(0)
    module, batch = _module(), _batch()
    params = list(module.text_encoder.parameters()) + list(module.discriminator.parameters())
    losses = _train_critic_term(module, batch, "contrastive", 60, torch.optim.Adam(params, lr=3e-3))
    assert module.text_encoder.embedding.weight.grad.abs().sum() > 0
    assert module.discriminator.image_embed.weight.grad.abs().sum() > 0
    # log(7) is chance with 7 candidates per row; after training each face finds its caption
    assert losses[0] > 1.0 and losses[-1] < 0.2 * losses[0]


def test_generator_term_reaches_the_generator_but_not_the_text_encoder():
    torch.manual_seed(0)
    module, batch = _module(weight=0.5), _batch()
    with torch.no_grad():
        conditions = module.conditions(batch)
    fake = module.synthesize(module.generator, module.sample_inputs(8, conditions))
    terms = module.generator_terms(fake, conditions)
    assert set(terms) == {"adv", "contrastive"}
    # the adversarial term is the critic's score of the same pass
    scores = module.critic(fake, conditions["text_embedding"])
    torch.testing.assert_close(terms["adv"], module.adversarial.g_loss(scores))
    terms["contrastive"].backward()
    assert all(p.grad is None for p in module.text_encoder.parameters())
    assert module.generator.generator.to_rgb[1].weight.grad.abs().sum() > 0


def test_weight_zero_builds_no_image_embedding_and_bad_settings_are_named():
    module = _module(weight=0.0)
    assert module.discriminator.image_embed is None
    batch = _batch()
    conditions = module.conditions(batch)
    assert module.extra_d_terms(module.critic_trunk(batch["image"]), conditions) == {}
    fake = module.synthesize(module.generator, module.sample_inputs(8, conditions))
    assert set(module.generator_terms(fake, conditions)) == {"adv"}
    with pytest.raises(ValueError, match="model.contrastive.weight"):
        _module(weight=-1.0)
    with pytest.raises(ValueError, match="model.contrastive.temperature"):
        _module(temperature=0.0)
    with pytest.raises(ValueError, match="unknown keys \\['wieght'\\]"):
        T2FModule(vocab_size=VOCAB, resolution=8, schedule={"kimg": 1},
                  contrastive={"wieght": 1.0})


def test_nearest_mismatch_pairs_each_face_with_the_closest_other_caption():
    module = _module()
    condition = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 1.0]])
    same = torch.eye(5, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    conditions = {"text_embedding": condition, "same_caption": same}
    module.init_mismatch("nearest")
    # 0 and 1 are the same sentence, so neither is the other's mismatch; 2 is closest to both
    assert torch.equal(module.mismatched_condition(conditions), condition[[2, 2, 0, 4, 3]])
    module.init_mismatch("shifted")
    assert torch.equal(module.mismatched_condition(conditions), condition[[4, 0, 1, 2, 3]])
    with pytest.raises(ValueError, match="model.mismatch='random': choose one of shifted, nearest"):
        module.init_mismatch("random")


def test_word_prediction_trains_the_text_encoder_to_keep_every_word():
    torch.manual_seed(0)
    module, batch = _module(weight=0.0, words=1.0), _batch()
    optimizer = torch.optim.Adam(module.discriminator_parameters(), lr=1e-2)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in module.text_words.parameters()} <= trained  # trained by the critic step
    losses = _train_critic_term(module, batch, "text_words", 150, optimizer)
    # at the start each of the 26 words is about a coin flip (26 * log 2 ~ 18 per caption);
    # after training the embedding tells which words each caption holds
    assert losses[0] > 10 and losses[-1] < 0.1 * losses[0]
    assert module.text_encoder.embedding.weight.grad.abs().sum() > 0
    logits = module.text_words(module.conditions(batch)["text_embedding"])
    present = torch.zeros(8, VOCAB).scatter(1, batch["caption"], 1.0)[:, 4:].bool()
    assert ((logits > 0) == present).all()


def test_image_word_prediction_trains_the_critic_on_real_faces_and_scores_fakes_for_the_generator():
    torch.manual_seed(0)
    module, batch = _module(weight=0.0, image_words=1.0), _batch()
    assert module.discriminator.image_embed is not None  # the head needs the image embedding
    optimizer = torch.optim.Adam(module.discriminator_parameters(), lr=1e-2)
    losses = _train_critic_term(module, batch, "image_words", 100, optimizer)
    assert module.discriminator.image_embed.weight.grad.abs().sum() > 0
    assert module.text_encoder.embedding.weight.grad is None  # the words come from the tokens
    assert losses[-1] < 0.1 * losses[0]  # each face tells which words its caption holds
    # the generator's term: its fakes scored by the same head, from the pass that scores them
    module.zero_grad(set_to_none=True)
    with torch.no_grad():
        conditions = module.conditions(batch)
    fake = module.synthesize(module.generator, module.sample_inputs(8, conditions))
    terms = module.generator_terms(fake, conditions)
    assert set(terms) == {"adv", "image_words"}
    terms["image_words"].backward()
    assert module.generator.generator.to_rgb[1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.text_encoder.parameters())


def test_word_prediction_zero_builds_no_heads_and_bad_settings_are_named():
    module, batch = _module(weight=0.0), _batch()
    assert module.text_words is None and module.image_words is None
    assert module.discriminator.image_embed is None  # nothing reads an image embedding
    assert module.extra_d_terms(module.critic_trunk(batch["image"]), module.conditions(batch)) == {}
    with pytest.raises(ValueError, match="model.word_prediction.text"):
        _module(words=-1.0)
    with pytest.raises(ValueError, match="unknown keys \\['imgae'\\]"):
        T2FModule(vocab_size=VOCAB, resolution=8, schedule={"kimg": 1},
                  word_prediction={"imgae": 1.0})


def test_mode_seeking_loss_matches_hand_values() -> None:
    from t2f.losses import mode_seeking_loss

    images = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.0], [1.0, 0.0]])  # pairs (0, 2) and (1, 3)
    latents = torch.tensor([[0.0], [0.0], [2.0], [2.0]])
    # mean |x1 - x2| = (0.5 + 0 + 0 + 1) / 4 = 0.375; mean |l1 - l2| = 2
    assert float(mode_seeking_loss(images, latents)) == pytest.approx(1 / (0.375 / 2 + 1e-5))


def test_mode_seeking_pairs_captions_and_pushes_one_captions_faces_apart() -> None:
    torch.manual_seed(0)
    module = T2FModule(
        vocab_size=VOCAB, resolution=8, schedule={"kimg": 1}, noise_dim=8, condition_dim=8,
        text_encoder={"embedding_dim": 8, "hidden_dim": 16, "num_layers": 1}, fmap_base=32, fmap_max=16,
        contrastive={"weight": 0.0}, mode_seeking=1.0)
    module.stage, module.alpha = 1, 1.0
    with torch.no_grad():
        conditions = module.generator_step_conditions(module.conditions(_batch()))
    emb = conditions["text_embedding"]
    assert torch.equal(emb[:4], emb[4:]) and not torch.equal(emb[0], emb[2])  # captions 0-3, twice
    assert conditions["same_caption"][0, 4] and conditions["same_caption"].shape == (8, 8)
    optimizer = torch.optim.Adam(module.generator.parameters(), lr=0.01)
    gaps = []
    for _ in range(30):
        inputs = module.sample_inputs(8, conditions)
        images = module.synthesize(module.generator, inputs)
        loss = module.extra_g_terms(inputs)["mode_seeking"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        gaps.append(float((images[:4] - images[4:]).abs().mean()))
    assert gaps[-1] > 1.5 * gaps[0], gaps  # the same caption's faces moved apart (1.9x here)
    with pytest.raises(ValueError, match="model.mode_seeking"):
        T2FModule(vocab_size=VOCAB, resolution=8, schedule={"kimg": 1}, mode_seeking=-1.0)
