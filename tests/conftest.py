"""Shared fixtures: the real Hydra config, composed and shrunk so a run takes seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from t2f.conf import CONFIG_DIR
from t2f.train import compose_run_config

REPO = Path(__file__).resolve().parents[1]
CONF = str(CONFIG_DIR)

# 4 -> 8 -> 16 -> 32 px stages of 16, 16, 24, 24 images (larger resolutions: 24 each)
TINY_SCHEDULE = ["model.schedule.kimg.4=0.016", "model.schedule.kimg.8=0.016", "model.schedule.kimg.16=0.024",
                 "model.schedule.kimg.32=0.024"]

# Small enough for 2 CPU cores: 8 px wide nets on 32x32 synthetic faces, a few batches.
TINY = [
    "dataset.size=96",
    "dataset.val_size=16",
    "dataset.batch_size=8",
    "logger=csv",
    "print_config=false",
    "trainer.precision=32-true",  # the same numerics on every CI CPU (auto picks bf16 on AMX / AVX-512 BF16)
    "callbacks.progress_bar.refresh_rate=0",
]
_TINY_PROGAN = ["model.generator.fmap_base=64", "model.generator.fmap_max=16",
                "model.discriminator.fmap_base=64", "model.discriminator.fmap_max=16"]
_TINY_TEXT = ["model.text.encoder.embedding_dim=8", "model.text.encoder.hidden_dim=16"]
TINY_MODEL = {
    "dcgan": ["model.generator.width=8", "model.discriminator.width=8", "model.generator.latent_dim=16",
              "model.total_kimg=0.04"],
    "gan_int_cls": ["model.generator.width=8", "model.discriminator.width=8", "model.generator.latent_dim=16",
                    "model.generator.embed_dim=8", "model.discriminator.embed_dim=8", *_TINY_TEXT,
                    "model.total_kimg=0.04"],
    # 4 -> 8 -> 16 -> 32 px in 0.08 kimg: 10 batches of 8, with fade-ins at every switch
    "t2f": [*_TINY_PROGAN, "model.generator.noise_dim=8", "model.generator.condition_dim=8", *_TINY_TEXT,
            *TINY_SCHEDULE, "model.schedule.batch_size=null", "model.ema_half_life_kimg=0.01"],
    # the same 4 -> 32 px schedule (half of each stage fading in; model=stylegan grows only when asked);
    # 16-wide codes, 8 mapping layers
    "stylegan": [*_TINY_PROGAN, "model.generator.z_dim=16", "model.generator.w_dim=16",
                 "model.schedule.start_resolution=4", *TINY_SCHEDULE, "model.schedule.batch_size=null", "model.ema_half_life_kimg=0.01"],
}
TINY_MODEL["stylegan_text"] = TINY_MODEL["stylegan"] + _TINY_TEXT


def compose_config(tmp_path: Path, overrides: list[str] | None = None, model: str = "dcgan",
                   tiny: bool = True) -> DictConfig:
    """The real config with overrides, resolved as inside a Hydra run writing to tmp_path."""
    run_overrides = [f"model={model}"]
    if tiny:
        run_overrides += TINY + TINY_MODEL.get(model, [])
    run_overrides += list(overrides or [])
    cfg = compose_run_config(run_overrides, tmp_path / "run")
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path.parent / "t2f-cache")
    return cfg


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """``tiny_checkpoint(name)`` -> ``last.ckpt`` of a tiny training, trained once per session.

    Names: ``t2f``, ``stylegan``, ``stylegan_text`` (with the contrastive term), ``dcgan``,
    ``gan_int_cls``.
    Sample grids are saved every 0.02 kimg, so a run leaves grids at several resolutions.
    """
    import torch

    from t2f.train import train

    made: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in made:
            overrides = ["callbacks.samples.every_kimg=0.02"]
            # the text StyleGAN also trains with the contrastive term (on by default in T2F)
            if name == "stylegan_text":
                overrides += ["model.text.contrastive.weight=1", "model.discriminator.embed_dim=16"]
            cfg = compose_config(tmp_path_factory.mktemp(f"ckpt_{name}"), overrides, model=name)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # tiny nets: one thread is faster on a busy 2-core machine
            try:
                train(cfg)
            finally:
                torch.set_num_threads(threads)
            made[name] = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return made[name]

    return make


@pytest.fixture
def one_thread():
    """Tiny networks: one intra-op thread is faster than two on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
