"""StyleGAN: mapping, style mixing, truncation, noise, w_avg, lazy R1, fade-in, training and resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from t2f.gan_loss import GANLoss
from t2f.growth import ProgressiveSchedule
from t2f.nets.layers import upsample2x
from t2f.nets.stylegan import MappingNetwork, StyleGANGenerator, layers_at_stage
from t2f.train import train
from tests.conftest import TINY, TINY_MODEL, compose_config
from tests.helpers import toy_players


def tiny_generator(**kw) -> StyleGANGenerator:
    torch.manual_seed(0)
    return StyleGANGenerator(z_dim=8, w_dim=8, max_resolution=16, mapping_layers=3,
                             fmap_base=32, fmap_max=8, **kw)


def record_styles(g: StyleGANGenerator) -> list[torch.Tensor]:
    """Hooks every AdaIN so that the style each layer receives is recorded, in layer order."""
    seen: list[torch.Tensor] = []
    for layer in g.synthesis.layers:
        layer.adain.register_forward_pre_hook(lambda mod, args: seen.append(args[1].detach().clone()))
    return seen


# --- networks ------------------------------------------------------------------------------

def test_mapping_output_shape_and_learning_rate_multiplier():
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))  # fixed: no vanishing gradients
    assert MappingNetwork(16, 24, num_layers=8)(z).shape == (5, 24)
    assert MappingNetwork(16, 24, condition_dim=6)(z, torch.randn(5, 6)).shape == (5, 24)
    # One Adam step moves every effective weight by lr * He-scale * multiplier: x0.01 slower.
    moves = {}
    for mult in (1.0, 0.01):
        torch.manual_seed(0)
        net = MappingNetwork(16, 24, num_layers=2, lr_multiplier=mult)
        first = net.layers[0]
        before = first.effective_weight().detach().clone()
        assert before.std().item() == pytest.approx(2**0.5 / 16**0.5, rel=0.15)  # He init either way
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        net(z).square().sum().backward()
        opt.step()
        moves[mult] = (first.effective_weight().detach() - before).abs()
    scale = 2**0.5 / 16**0.5
    # (float32 rounding of the 100x larger stored weights: 1% tolerance)
    assert torch.allclose(moves[1.0], torch.tensor(1e-2 * scale), rtol=1e-2)
    assert torch.allclose(moves[0.01], torch.tensor(1e-2 * scale * 0.01), rtol=1e-2)


def test_style_mixing_feeds_latent_a_before_the_crossover_and_b_after():
    g = tiny_generator().eval()
    seen = record_styles(g)
    za, zb = torch.randn(3, 8), torch.randn(3, 8)
    wa, wb = g.mapping(za), g.mapping(zb)
    g.synthesis(g.styles(za, 2, z2=zb, mix_layer=3), 2)
    assert len(seen) == layers_at_stage(2) == 6
    for i, style in enumerate(seen):
        assert torch.allclose(style, wa if i < 3 else wb), i
    # random crossover (mixing_prob 1): always inside the layers used at this stage
    cuts = set()
    for seed in range(40):
        torch.manual_seed(seed)
        seen.clear()
        g.synthesis(g.styles(za, 1, mixing_prob=1.0), 1)
        used = layers_at_stage(1)
        assert len(seen) == used
        same = [torch.allclose(s, wa) for s in seen]
        cut = same.index(False)
        assert not any(same[cut:])  # A up to the crossover, the second latent after it
        cuts.add(cut)
    assert cuts == set(range(1, layers_at_stage(1)))
    seen.clear()
    g.style_mixing_prob = 0.0
    g.train()(za, stage=2)  # the training pass mixes at the generator's style_mixing_prob
    assert all(torch.allclose(s, wa) for s in seen)
    g.style_mixing_prob = 1.0
    seen.clear()
    g(za, stage=2)
    assert not all(torch.allclose(s, wa) for s in seen)
    seen.clear()
    g.eval().sample(za, stage=2)  # sampling never mixes
    assert all(torch.allclose(s, wa) for s in seen)


def test_truncation_psi_zero_gives_the_average_style_and_psi_one_changes_nothing():
    g = tiny_generator().eval()
    g.w_avg.copy_(torch.randn(8))
    z = torch.randn(4, 8)
    w = g.mapping(z)
    ws0 = g.styles(z, stage=2, psi=0.0, truncation_cutoff=None)
    assert torch.allclose(ws0, g.w_avg.expand_as(ws0))
    ws1 = g.styles(z, stage=2, psi=1.0)
    assert torch.allclose(ws1, w[:, None].expand_as(ws1))
    cut = g.styles(z, stage=2, psi=0.5, truncation_cutoff=2)
    assert torch.allclose(cut[:, :2], g.w_avg.lerp(w, 0.5)[:, None].expand(-1, 2, -1))
    assert torch.allclose(cut[:, 2:], w[:, None].expand(-1, g.num_layers - 2, -1))
    per_sample = g.styles(z, stage=2, psi=torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert torch.allclose(per_sample[0], ws1[0]) and torch.allclose(per_sample[1], ws0[1])
    noise = g.synthesis.make_noise(4, stage=2)
    assert torch.equal(g.sample(z, stage=2, psi=1.0, noise=noise), g(z, stage=2, noise=noise)[0])


def test_noise_changes_the_output_only_where_its_scale_is_nonzero():
    g = tiny_generator().eval()
    z = torch.randn(2, 8)
    a, b = g.synthesis.make_noise(2, stage=2), g.synthesis.make_noise(2, stage=2)
    assert all(layer.noise.weight.abs().sum() == 0 for layer in g.synthesis.layers)  # init 0
    assert torch.equal(g.sample(z, stage=2, noise=a), g.sample(z, stage=2, noise=b))
    with torch.no_grad():
        g.synthesis.layers[3].noise.weight.fill_(0.5)
    mixed = [b[i] if i != 3 else a[3] for i in range(len(a))]  # b except where the scale is set
    assert torch.equal(g.sample(z, stage=2, noise=a), g.sample(z, stage=2, noise=mixed))
    assert not torch.allclose(g.sample(z, stage=2, noise=a), g.sample(z, stage=2, noise=b))


def test_noise_strength_moves_at_its_learning_rate_multiplier():
    """One Adam step moves every parameter by about lr; the applied noise strength by lr x multiplier."""
    from t2f.nets.stylegan import NoiseInjection

    x, noise = torch.randn(4, 3, 5, 5), torch.randn(4, 1, 5, 5)
    moved = {}
    for multiplier in (1.0, 0.2):
        layer = NoiseInjection(3, lr_multiplier=multiplier)
        opt = torch.optim.Adam(layer.parameters(), lr=0.01)
        layer(x, noise).mul(noise).sum().backward()
        opt.step()
        moved[multiplier] = layer.strength().detach().abs()
    torch.testing.assert_close(moved[1.0], torch.full((3,), 0.01), rtol=1e-4, atol=0)
    torch.testing.assert_close(moved[0.2], torch.full((3,), 0.002), rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="lr_multiplier"):
        NoiseInjection(3, lr_multiplier=0)


def test_exported_stylegan_keeps_its_noise_multiplier_and_old_files_load_with_one():
    g = StyleGANGenerator(8, 8, 16, mapping_layers=2, fmap_base=32, fmap_max=8, noise_lr_multiplier=0.2)
    kwargs = dict(g.init_kwargs)
    assert kwargs["noise_lr_multiplier"] == 0.2
    assert StyleGANGenerator(**kwargs).synthesis.layers[0].noise.lr_multiplier == 0.2
    del kwargs["noise_lr_multiplier"]  # a file written before the option: the strength was stored as is
    assert StyleGANGenerator(**kwargs).synthesis.layers[0].noise.lr_multiplier == 1.0


def test_w_avg_moves_towards_the_batch_mean_in_training_mode_only():
    g = tiny_generator(w_avg_beta=0.9)
    start = torch.randn(8)
    g.w_avg.copy_(start)
    z = torch.randn(6, 8)
    with torch.no_grad():
        w = g.mapping(z)
        g.eval()(z, stage=0)
        assert torch.equal(g.w_avg, start)  # sampling never moves it
        g.train()(z, stage=0)
    assert torch.allclose(g.w_avg, 0.9 * start + 0.1 * w.mean(0), atol=1e-6)
    assert "w_avg" in g.state_dict()  # a buffer: saved in checkpoints


def test_fade_in_at_alpha_zero_equals_the_previous_stage_upsampled():
    g = tiny_generator().eval()
    z = torch.randn(3, 8)
    ws = g.styles(z, stage=2)
    noise = g.synthesis.make_noise(3)
    for stage in (1, 2):
        faded = g.synthesis(ws, stage, 0.0, noise)
        previous = g.synthesis(ws, stage - 1, 1.0, noise)
        assert torch.allclose(faded, upsample2x(previous), atol=1e-6)
        assert not torch.allclose(g.synthesis(ws, stage, 0.5, noise), faded)


def test_the_stylegan_config_builds_the_papers_critic_and_optimizer_resets(tmp_path):
    """model=stylegan: the critic blurs before each downsampling (D_basic) and Adam's state is reset
    at every fade-in and stable phase (the official loop); ProGAN's critic without blur on request."""
    from hydra.utils import instantiate

    cfg = compose_config(tmp_path, model="stylegan")
    module = instantiate(cfg.model)
    assert module.discriminator.blur and module.schedule.reset_optimizer
    assert all(block.blur is not None for block in module.discriminator.blocks[1:])
    plain = instantiate(compose_config(tmp_path, ["model.discriminator.blur=false"], model="stylegan").model)
    assert not plain.discriminator.blur and all(block.blur is None for block in plain.discriminator.blocks[1:])


# --- loss ----------------------------------------------------------------------------------

def test_r1_on_a_linear_critic_and_lazy_weighting():
    a = torch.randn(3, 4, 4)
    critic = lambda x, c=None: (x * a).flatten(1).sum(1)  # noqa: E731  grad_x = a for every sample
    real, fake = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    norm2 = a.square().sum()
    players = toy_players(critic, fake)
    eager = GANLoss("nonsaturating", r1_gamma=10.0)
    _, parts = eager.critic_loss(players, real, {})
    assert parts["r1"].item() == pytest.approx(5.0 * norm2.item(), rel=1e-5)
    lazy = GANLoss("nonsaturating", r1_gamma=10.0, r1_interval=4)
    due = [s for s in range(8) if "r1" in lazy.critic_loss(players, real, {}, step=s)[1]]
    assert due == [0, 4]
    _, parts = lazy.critic_loss(players, real, {}, step=4)
    assert parts["r1"].item() == pytest.approx(5.0 * 4 * norm2.item(), rel=1e-5)  # gamma/2 * N
    with pytest.raises(ValueError, match="r1_interval"):
        GANLoss("nonsaturating", r1_gamma=1.0, r1_interval=0)


# --- training ------------------------------------------------------------------------------

def _run(tmp_path: Path, overrides: list[str] | None = None, model: str = "stylegan"):
    cfg = compose_config(tmp_path, ["trainer.log_every_n_steps=1", *(overrides or [])], model=model)
    return cfg, train(cfg)


def test_stylegan_trains_across_stage_switches_and_saves_w_avg(tmp_path):
    cfg, metrics = _run(tmp_path)
    run = Path(cfg.paths.output_dir)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["t2f"]["images_seen"] >= 80 and "stage" not in ckpt["t2f"]  # the stage follows from it
    state = ckpt["state_dict"]
    assert state["generator.w_avg"].abs().sum() > 0  # tracked during training
    assert torch.equal(state["generator_ema.w_avg"], state["generator.w_avg"])
    assert not any(k.startswith("text.") for k in state)  # unconditional: no text component
    sizes = {p.stem.split("_")[-1] for p in (run / "samples").glob("*.png")}
    assert {"4px", "32px"} <= sizes
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_sample_grid_has_untruncated_and_truncated_halves(tmp_path):
    cfg = compose_config(tmp_path, [], model="stylegan")
    from hydra.utils import instantiate

    module = instantiate(cfg.model)
    module.images_seen = int(module.total_kimg * 1000)  # the last stage, 32 px
    inputs, labels = module.fixed_sample_inputs(16, 4, seed=3)
    assert labels == ["psi=1", "psi=1", "psi=0.7", "psi=0.7"]
    assert torch.equal(inputs["z"][:8], inputs["z"][8:])  # same latents, truncated below
    assert inputs["psi"].tolist() == [1.0] * 8 + [pytest.approx(0.7)] * 8
    images = module.generate(inputs)
    assert images.shape == (16, 3, 32, 32)
    module.generator_ema.w_avg.fill_(0.3)
    assert torch.equal(module.generate(inputs)[:8], images[:8])  # psi = 1 ignores w_avg
    assert torch.equal(module.generate(inputs), module.generate(inputs))  # fixed noise: reproducible


LONG_FADE = "model.schedule.kimg.8=0.032"  # the 8 px fade: 16-32 images


def test_resume_mid_fade_restores_stage_alpha_and_w_avg(tmp_path):
    first, _ = _run(tmp_path / "a", [LONG_FADE, "trainer.max_steps=6"])  # 3 batches of 8: 8 px fade
    ckpt_path = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt_path, weights_only=True)
    schedule = ProgressiveSchedule(32, {4: 0.016, 8: 0.032, 16: 0.024, 32: 0.024}, fade_in_fraction=0.5)
    at_save = schedule.at(saved["t2f"]["images_seen"] / 1000)
    assert at_save.stage == 1 and 0.0 < at_save.alpha < 1.0

    seen = {}

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.setdefault("first", (module.images_seen, module.stage, module.alpha,
                                      module.generator.w_avg.clone()))

    second = compose_config(tmp_path / "b", [LONG_FADE, f"ckpt_path={ckpt_path}", "trainer.max_steps=8"],
                            model="stylegan")
    train(second, extra_callbacks=[Probe()])
    images, stage, alpha, w_avg = seen["first"]
    assert images == saved["t2f"]["images_seen"] == 24
    assert (stage, alpha) == (at_save.stage, at_save.alpha)
    assert torch.equal(w_avg, saved["state_dict"]["generator.w_avg"])


def test_conditional_stylegan_with_lazy_r1_trains_a_few_steps(tmp_path, monkeypatch):
    import t2f.gan_loss

    calls = []
    original = t2f.gan_loss.r1_penalty
    monkeypatch.setattr(t2f.gan_loss, "r1_penalty", lambda *a: calls.append(1) or original(*a))
    cfg, metrics = _run(tmp_path, ["trainer.max_steps=6",
                                   "model.loss.name=nonsaturating", "model.loss.drift_weight=0",
                                   "model.loss.r1_gamma=1", "model.loss.r1_interval=2"], model="stylegan_text")
    assert len(calls) == 2  # critic steps 0 and 2 of 3: lazy R1
    assert cfg.model.text.vocab_size > 20  # filled in by train()
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("text.encoder.") for k in state)
    assert "generator.mapping.embed.weight" in state
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_unconditional_stylegan_needs_no_captions(tmp_path):
    from tests.fixtures_datasets import make_folder

    root = tmp_path / "images"
    make_folder(root, corrupt=False)
    tiny = [o for o in TINY if not o.startswith(("dataset.size", "dataset.val_size"))]
    cfg = compose_config(tmp_path, [*tiny, *TINY_MODEL["stylegan"], "dataset=folder", f"dataset.root={root}",
                                    "dataset.resolution=16", "dataset.num_workers=0", "dataset.decode_workers=1",
                                    "dataset.progress=false", "dataset.batch_size=4", "trainer.max_steps=4",
                                    "model.schedule.kimg=0.004"],
                         model="stylegan", tiny=False)
    train(cfg)
    assert cfg.model.text is None
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


def test_without_noise_inputs_the_layers_have_none_and_the_image_is_a_function_of_z():
    g = StyleGANGenerator(8, 8, 16, mapping_layers=2, fmap_base=32, fmap_max=8, noise_inputs=False).eval()
    assert all(layer.noise is None for layer in g.synthesis.layers)
    assert not any("noise" in name for name, _ in g.named_parameters())
    z = torch.randn(2, 8)
    a, b = g.synthesis.make_noise(2), g.synthesis.make_noise(2)
    with torch.no_grad():  # the noise maps are ignored, so sampling and training passes agree on z alone
        assert torch.equal(g.sample(z, noise=a), g.sample(z, noise=b))
        rebuilt = StyleGANGenerator(**g.init_kwargs)  # exported files keep the choice
    assert all(layer.noise is None for layer in rebuilt.synthesis.layers)
