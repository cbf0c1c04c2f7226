"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import csv
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from t2f.conf import CONFIG_DIR
from tests.conftest import REPO, TINY, TINY_MODEL

#: Metrics settings that make a tiny run's metrics take a second.
METRICS_FAST = ["metrics.num_samples=16", "metrics.num_real=32", "metrics.batch_size=8", "metrics.every_kimg=0.016"]

#: A caption every text model's tiny vocabulary knows.
CAPTION = "a smiling woman with long red hair"


def generate_config(**values: object) -> DictConfig:
    """conf/generate.yaml with ``values``, as the CLI would compose it (unknown keys fail)."""
    cfg = OmegaConf.load(CONFIG_DIR / "generate.yaml")
    for key in ("defaults", "hydra"):
        cfg.pop(key)
    OmegaConf.set_struct(cfg, True)
    return OmegaConf.merge(cfg, values)


class StubExtractor(nn.Module):
    """A small fixed random conv net: uint8 (N, 3, H, W) -> (features (N, 24), logits (N, 10))."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1234)
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.head = nn.Linear(24, 10)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.3

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float() / 127.5 - 1
        x = F.relu(self.conv1(x))
        feats = F.adaptive_avg_pool2d(F.relu(self.conv2(x)), 1).flatten(1)
        return feats, self.head(feats)


def finite_losses(run_dir: Path) -> dict[str, float]:
    """The last logged critic and generator losses of a run, after checking every one is finite."""
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    losses = {}
    for key in ("loss/d", "loss/g"):
        values = [float(r[key]) for r in rows if r.get(key)]
        assert values, f"{key} was never logged"
        assert all(torch.isfinite(torch.tensor(values))), f"{key} is not finite: {values}"
        losses[key] = values[-1]
    return losses


def run_cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` in ``cwd``, W&B offline."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def cli_tiny(tmp_path: Path) -> list[str]:
    """The tiny DCGAN run's command-line overrides, with the cache beside ``tmp_path``."""
    return ["model=dcgan", *TINY, *TINY_MODEL["dcgan"], f"paths.cache_dir={tmp_path.parent / 't2f-cache'}"]


class StubGenerator(nn.Module):
    """A module stand-in for the metric suite: smooth random images at a fixed resolution."""

    def __init__(self, res: int) -> None:
        super().__init__()
        self.res = res
        self.scale = nn.Parameter(torch.ones(()))

    @property
    def device(self) -> torch.device:
        return self.scale.device

    def sample_inputs(self, n, conditions=None, generator=None, noise=True):
        return {"z": torch.randn(n, 3, 4, 4, generator=generator)}

    def noise_inputs(self, n, generator=None):
        return {}

    def generate(self, inputs, ema=True):
        z = inputs["z"] * inputs.get("psi", 1.0)  # truncation as T2F's and DCGAN's: towards the mean latent
        img = F.interpolate(z, size=self.res, mode="bilinear", align_corners=False)
        return (img * self.scale).tanh()


def wandb_log_records(data: bytes) -> Iterator[bytes]:
    """Records of a W&B transaction log (``*.wandb``: LevelDB's log format, 32 KiB blocks of
    chunks), for tests that check what an offline run recorded."""
    block, header = 32768, 7
    pos, chunks = header, []   # the file starts with ':W&B' + magic + version
    while pos + header <= len(data):
        left = block - pos % block
        if left < header:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + header])
        pos += header
        if kind == 0 and length == 0:   # zero padding up to the next block
            pos += left - header
            continue
        chunks.append(data[pos:pos + length])
        pos += length
        if kind in (1, 4):   # FULL or LAST
            yield b"".join(chunks)
            chunks = []


class ToyGenerator(nn.Module):
    """Always draws the given images (the first n), so losses can be computed by hand."""

    latent_dim = 1

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.images = images

    def forward(self, z, condition=None, *, stage=None, alpha=1.0, noise=None):
        return self.images[: z.shape[0]], {}

    def sampling_noise(self, n, generator, device):
        return None


class ToyCritic(nn.Module):
    """``head(features(x), c) = score(trunk(x), c)``; ``embed`` is the identity."""

    def __init__(self, score, trunk=None) -> None:
        super().__init__()
        self.score, self.trunk = score, trunk or (lambda x: x)

    def features(self, images, stage=None, alpha=1.0):
        return self.trunk(images)

    def head(self, features, condition=None):
        return self.score(features, condition)

    def embed(self, features):
        return features


class ToyText:
    """A text component whose mismatched captions are given; ``image_terms`` optional."""

    def __init__(self, mismatched, image_terms=None, mismatch_weight: float = 0.5) -> None:
        self._mismatched, self._image_terms = mismatched, image_terms
        self.mismatch_weight = mismatch_weight
        self.reads_image_embedding = image_terms is not None
        self.reads_image_words = self.reads_fake_embedding = False

    def mismatched(self, conditions):
        return self._mismatched

    def image_terms(self, embedding, conditions, fakes=False, word_embedding=None):
        return {} if self._image_terms is None else self._image_terms(embedding)

    def caption_terms(self, conditions):
        return {}

    def count_caption_words(self, conditions):
        pass


def toy_players(score, fake: torch.Tensor, trunk=None, mismatched=None, image_terms=None,
                mismatch_weight: float = 0.5):
    """Players for t2f.gan_loss.GANLoss: a critic ``score(x, c)`` and a generator drawing ``fake``."""
    from t2f.gan_loss import Players

    text = None if mismatched is None else ToyText(mismatched, image_terms, mismatch_weight)
    return Players(ToyGenerator(fake), ToyCritic(score, trunk), text)


def dcgan_module(resolution: int = 8, latent_dim: int = 8, width: int = 4, norm: str = "batch",
                 total_kimg: float = 1.0, **module: object):
    """A tiny DCGAN as t2f.modules.gan.GANModule, built from its parts as Hydra does."""
    from t2f.modules.gan import GANModule
    from t2f.nets.dcgan import DCGANDiscriminator, DCGANGenerator

    return GANModule(DCGANGenerator(latent_dim, resolution, width), DCGANDiscriminator(resolution, width, norm=norm),
                     total_kimg=total_kimg, **module)


def t2f_module(vocab_size: int = 30, resolution: int = 8, text: dict | None = None, generator: dict | None = None,
               loss: dict | None = None, schedule: dict | None = None, **module: object):
    """A tiny T2F (text component, T2F generator, ProGAN critic) grown to ``resolution`` from
    ``resolution`` (a single stage) unless ``schedule`` says otherwise."""
    from t2f.gan_loss import GANLoss
    from t2f.growth import ProgressiveSchedule
    from t2f.modules.gan import GANModule
    from t2f.modules.text import TextConditioner
    from t2f.nets.progan import ProGANDiscriminator
    from t2f.nets.text_encoder import T2FGenerator

    text_part = TextConditioner(vocab_size, encoder={"embedding_dim": 8, "hidden_dim": 16, "num_layers": 1},
                                **(text or {}))
    width = text_part.output_dim
    g = T2FGenerator(width, 8, 8, resolution, fmap_base=32, fmap_max=16, **(generator or {}))
    d = ProGANDiscriminator(resolution, fmap_base=32, fmap_max=16, condition_dim=width,
                            embed_dim=width if text_part.reads_image_embedding else 0)
    growth = ProgressiveSchedule(resolution, **{"kimg": 1, "start_resolution": resolution, **(schedule or {})})
    return GANModule(g, d, GANLoss(**{"name": "wgan_gp", **(loss or {})}), text=text_part, schedule=growth, **module)


def stylegan_module(resolution: int = 8, schedule: dict | None = None, generator: dict | None = None,
                    discriminator: dict | None = None, loss: dict | None = None, **module: object):
    """A tiny unconditional StyleGAN (4-wide codes, one mapping layer)."""
    from t2f.gan_loss import GANLoss
    from t2f.growth import ProgressiveSchedule
    from t2f.modules.gan import GANModule
    from t2f.nets.progan import ProGANDiscriminator
    from t2f.nets.stylegan import StyleGANGenerator

    g = StyleGANGenerator(4, 4, resolution, **{"mapping_layers": 1, "fmap_base": 32, "fmap_max": 8, **(generator or {})})
    d = ProGANDiscriminator(resolution, **{"fmap_base": 32, "fmap_max": 8, **(discriminator or {})})
    growth = ProgressiveSchedule(resolution, **{"kimg": 1, **(schedule or {})})
    return GANModule(g, d, GANLoss(**{"name": "wgan_gp", **(loss or {})}), schedule=growth, **module)


def checkpoint_growth(ckpt: dict):
    """The stage and fade-in of a checkpoint: its schedule at its images seen (not stored apart)."""
    from t2f.growth import ProgressiveSchedule

    schedule = {k: v for k, v in ckpt["t2f"]["config"]["model"]["schedule"].items() if k != "_target_"}
    return ProgressiveSchedule(**schedule).at(ckpt["t2f"]["images_seen"] / 1000)
