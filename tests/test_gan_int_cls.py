"""GAN-INT-CLS end to end: a model that is one nets file and one YAML file trains, resumes its
stage-free schedule, exports, generates and is evaluated by the tools that serve every model,
on one process and under DDP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

from t2f.export import export, load_generator
from t2f.runs import read_csv_history
from tests.conftest import REPO, TINY, TINY_MODEL
from tests.helpers import finite_losses, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_logs_the_matching_aware_and_interpolated_terms(tiny_checkpoint) -> None:
    ckpt = tiny_checkpoint("gan_int_cls")
    run = ckpt.parents[1]
    finite_losses(run)
    history = read_csv_history(run / "csv" / "metrics.csv")
    logged = set().union(*(row.keys() for row in history))
    assert {"loss/d_adv", "loss/g_adv", "loss/g_interpolated"} <= logged
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any(k.startswith("text.encoder.") for k in state) and "discriminator.compress.0.weight" in state


def test_the_matching_aware_critic_learns_to_tell_a_caption_from_another(tmp_path: Path) -> None:
    """Trained on real faces alone (no generator step), the critic scores a face under its own
    caption above the same face under the next one's: what GAN-CLS asks of it."""
    from t2f.data.synthetic import SyntheticDataModule
    from t2f.gan_loss import GANLoss
    from t2f.modules.gan import GANModule
    from t2f.modules.text import TextConditioner
    from t2f.nets.gan_int_cls import GANINTCLSDiscriminator, GANINTCLSGenerator

    torch.manual_seed(0)
    dm = SyntheticDataModule(root=str(tmp_path / "synthetic"), size=256, val_size=16, resolution=16, batch_size=32)
    dm.setup("fit")
    text = TextConditioner(len(dm.vocab), encoder={"embedding_dim": 16, "hidden_dim": 16})
    module = GANModule(GANINTCLSGenerator(16, 8, 16, 8, 8), GANINTCLSDiscriminator(16, 16, 8, 8),
                       GANLoss("nonsaturating"), text=text, total_kimg=1,
                       optimizer_d=partial(torch.optim.Adam, lr=2e-3, betas=(0.5, 0.999)))
    optimizer = module.configure_optimizers()[1]
    batches = list(dm.train_dataloader())

    def gap(batch) -> float:
        with torch.no_grad():
            conditions = module.conditions(batch)
            features = module.discriminator.features(batch["image"])
            own = module.discriminator.head(features, conditions["text_embedding"])
            other = module.discriminator.head(features, text.mismatched(conditions))
        return float((own - other).mean())

    module.eval()
    before = gap(batches[0])
    module.train()
    for _ in range(10):
        for batch in batches:
            loss, _ = module.loss.critic_loss(module.players(), batch["image"], module.conditions(batch))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    module.eval()
    assert abs(before) < 0.05 and gap(batches[0]) > 0.5, (before, gap(batches[0]))  # 0.93 here


@pytest.mark.slow
def test_ddp_then_export_generate_and_evaluate_alignment(tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    cache = tmp_path.parent / "t2f-cache"
    args = ["model=gan_int_cls", *TINY, *TINY_MODEL["gan_int_cls"], "trainer=ddp_cpu", f"paths.cache_dir={cache}",
            "+logger.csv.flush_logs_every_n_steps=1", "trainer.log_every_n_steps=1", f"hydra.run.dir={run}"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = run / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["t2f"]["images_seen"] >= 40  # 2 ranks x 8 per batch
    finite_losses(run)

    generator = load_generator(export(ckpt, tmp_path / "g.pt"))
    assert generator.conditional and generator.model == "gan_int_cls"
    faces = generator.generate(["a smiling woman with blond hair", "a man with a beard"], n=3, seed=1)
    assert faces.shape == (6, 3, 32, 32) and faces.abs().max() <= 1

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "eval.json"
    evaluate = subprocess.run(
        [sys.executable, "-m", "t2f.evaluate", f"ckpt={ckpt}", "metrics=alignment", "num_samples=16", "num_real=32",
         "batch_size=8", f"out={out}", f"paths.cache_dir={cache}", "metrics.alignment.epochs=1",
         "metrics.alignment.width=8", "metrics.alignment.val_images=16", "metrics.alignment.min_count=2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["model"] == "gan_int_cls" and math.isfinite(report["metrics"]["alignment"]["mean"])

    grid = tmp_path / "grid.png"
    generate = subprocess.run([sys.executable, "-m", "t2f.generate", f"ckpt={ckpt}", "text=a smiling woman", "n=4",
                               f"out={grid}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert generate.returncode == 0, generate.stderr[-3000:]
    assert grid.is_file()
