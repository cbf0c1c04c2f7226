"""``python -m t2f.export``: a standalone generator that reproduces the checkpoint's samples exactly
and loads with plain PyTorch (no Lightning, no Hydra)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from t2f.checkpoints import build_module, checkpoint_vocab, read_checkpoint
from t2f.export import export, load_generator
from t2f.generate import generate
from tests.conftest import REPO
from tests.helpers import CAPTION
from tests.helpers import generate_config as config

TEXTS = [CAPTION, "a man with a beard and glasses zzyzx"]


pytestmark = pytest.mark.usefixtures("one_thread")


def module_samples(module, vocab, texts: list[str] | None, n: int, seed: int, psi: float) -> torch.Tensor:
    """What the training module itself generates for the sampling convention of t2f.export:
    ``n`` latents (then the generator's other noise) from ``seed``, repeated for every caption."""
    gen = torch.Generator().manual_seed(seed)
    rows = len(texts or [None])
    inputs = {"z": torch.randn(n, module.generator.latent_dim, generator=gen).repeat(rows, 1), "psi": psi}
    noise = module.generator_ema.sampling_noise(n, gen, "cpu")
    if noise is not None:
        inputs["noise"] = [m.repeat(rows, *[1] * (m.dim() - 1)) for m in noise]
    if texts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unknown word was reported by the exported generator
            inputs.update(module.encode_captions([t for t in texts for _ in range(n)], vocab))
    return module.generate(inputs)


@pytest.mark.parametrize("name, psi", [("t2f", 1.0), ("t2f", 0.6), ("stylegan", 0.7), ("stylegan_text", 0.7),
                                       ("dcgan", 0.5), ("gan_int_cls", 0.8)])
def test_exported_generator_reproduces_the_checkpoint(tiny_checkpoint, tmp_path: Path, name: str,
                                                      psi: float) -> None:
    ckpt = tiny_checkpoint(name)
    contents = read_checkpoint(ckpt)
    module, vocab = build_module(contents, ckpt), checkpoint_vocab(contents)
    texts = TEXTS if name in ("t2f", "stylegan_text", "gan_int_cls") else None
    path = export(ckpt, tmp_path / "generator.pt")
    state = torch.load(path, weights_only=True)  # plain contents
    assert state["format"] == "t2f.generator" and state["source"]["kimg"] == module.kimg
    generator = load_generator(path)
    assert (generator.stage, generator.alpha) == (module.stage, module.alpha)
    if texts:
        assert generator.vocab == vocab and state["vocab"]["tokens"] == vocab.tokens
    if name.startswith("stylegan"):
        assert torch.equal(state["generator"]["state_dict"]["w_avg"], module.generator_ema.w_avg)
        assert generator.truncation_cutoff == module.generator_ema.truncation_cutoff
    with pytest.warns(UserWarning, match="zzyzx") if texts else nullcontext():
        images = generator.generate(texts, n=3, seed=11, psi=psi)
    expected = module_samples(module, vocab, texts, n=3, seed=11, psi=psi)
    assert images.shape == expected.shape == (3 * len(texts or [0]), 3, 32, 32)
    assert torch.equal(images, expected)


@pytest.mark.slow
def test_export_cli_and_a_loader_without_lightning_or_hydra(tiny_checkpoint, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ckpt = tiny_checkpoint("t2f")
    result = subprocess.run([sys.executable, "-m", "t2f.export", f"ckpt={ckpt}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    path = ckpt.with_name("last.generator.pt")  # default: beside the checkpoint
    assert f"Wrote {path}" in result.stdout
    script = (
        "import sys, torch\n"
        "from t2f.export import load_generator\n"
        f"g = load_generator({str(path)!r})\n"
        f"images = g.generate({CAPTION!r}, n=2, seed=3, psi=0.7)\n"
        "torch.save(images, sys.argv[1])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pytorch_lightning', 'lightning', 'lightning_fabric', 'hydra', 'omegaconf'))\n"
        "print('loaded:', loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.pt")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded: []" in result.stdout
    images = torch.load(tmp_path / "x.pt", weights_only=True)
    assert torch.equal(images, load_generator(path).generate(CAPTION, n=2, seed=3, psi=0.7))


def test_generate_reads_exported_files_too(tiny_checkpoint, tmp_path: Path) -> None:
    ckpt = tiny_checkpoint("stylegan_text")
    exported = export(ckpt, tmp_path / "g.pt")
    a = generate(config(ckpt=str(ckpt), text=CAPTION, n=4, psi=0.7, out=str(tmp_path / "a.png")))
    b = generate(config(ckpt=str(exported), text=CAPTION, n=4, psi=0.7, out=str(tmp_path / "b.png")))
    assert a.read_bytes() == b.read_bytes()


def test_export_errors(tiny_checkpoint, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export(tmp_path / "missing.ckpt")
    (tmp_path / "notes.ckpt").write_text("hello")
    with pytest.raises(ValueError, match="not a checkpoint written by t2f"):
        export(tmp_path / "notes.ckpt")
    exported = export(tiny_checkpoint("dcgan"), tmp_path / "g.pt")
    with pytest.raises(ValueError, match="already an exported generator"):
        export(exported)
    with pytest.raises(ValueError, match="not a checkpoint written by t2f"):
        load_generator(tmp_path / "notes.ckpt")
    with pytest.raises(ValueError, match="psi=-1 must be"):
        load_generator(exported).generate(n=2, psi=-1)
    with pytest.raises(ValueError, match="n=0 must be"):
        load_generator(exported).generate(n=0)


def test_a_file_names_its_generator_by_path_and_only_t2f_generators_load(tiny_checkpoint, tmp_path: Path) -> None:
    """Export writes class path + recorded constructor arguments: no per-model table. A file
    (untrusted) that names any other class, or arguments the class does not take, is refused;
    files written before paths (a bare class name) still load."""
    exported = export(tiny_checkpoint("dcgan"), tmp_path / "g.pt")
    state = torch.load(exported, weights_only=True)
    assert state["generator"]["class"] == "t2f.nets.dcgan.DCGANGenerator"
    reference = load_generator(exported).generate(n=2, seed=3)
    from t2f.export import build_generator

    state["generator"]["class"] = "DCGANGenerator"  # the first format
    torch.testing.assert_close(build_generator(state).generate(n=2, seed=3), reference, rtol=0, atol=0)
    for hostile in ("os.system", "torch.nn.Linear", "t2f.nets.dcgan.DCGANDiscriminator"):
        state["generator"]["class"] = hostile
        with pytest.raises(ValueError, match="unknown generator class"):
            build_generator(state)
    state["generator"]["class"] = "t2f.nets.dcgan.DCGANGenerator"
    state["generator"]["kwargs"] = {**state["generator"]["kwargs"], "payload": 1}
    with pytest.raises(ValueError, match="arguments do not fit"):
        build_generator(state)


def test_every_generator_rebuilds_from_its_recorded_arguments() -> None:
    from t2f.nets.recorded import generator_classes

    built = {
        "t2f.nets.dcgan.DCGANGenerator": dict(latent_dim=8, resolution=16, width=4),
        "t2f.nets.stylegan.StyleGANGenerator": dict(z_dim=8, w_dim=8, max_resolution=16, mapping_layers=2,
                                                    fmap_base=32, fmap_max=8, noise_lr_multiplier=0.5),
        "t2f.nets.text_encoder.T2FGenerator": dict(text_dim=6, condition_dim=4, noise_dim=5, max_resolution=16,
                                                   channels=(8, 8, 4), kl_weight=0.5),
        "t2f.nets.gan_int_cls.GANINTCLSGenerator": dict(text_dim=6, latent_dim=5, resolution=16, width=4,
                                                        embed_dim=3),
    }
    assert set(generator_classes()) == set(built)
    for path, kwargs in built.items():
        net = generator_classes()[path](**kwargs)
        again = type(net)(**net.init_kwargs)
        assert again.init_kwargs == net.init_kwargs
        assert all(net.init_kwargs[k] == (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items())
        assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
        assert net.latent_dim == kwargs.get("latent_dim", kwargs.get("z_dim", kwargs.get("noise_dim")))


def test_a_stylegan_file_written_before_the_generator_kept_its_cutoff_truncates_as_it_says(tiny_checkpoint) -> None:
    from t2f.export import build_generator, checkpoint_state

    state = checkpoint_state(tiny_checkpoint("stylegan"))
    del state["generator"]["kwargs"]["truncation_cutoff"]
    state["truncation_cutoff"] = None  # such files said "every layer" here
    generator = build_generator(state)
    z, noise = generator.latents(2, seed=0)
    every_layer = generator.render(generator.styles(z, psi=0.5), noise)
    assert generator.generator.truncation_cutoff is None
    assert torch.equal(generator.synthesize(z, psi=0.5, noise=noise), every_layer)
