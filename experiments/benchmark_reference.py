"""t2f's StyleGAN training step against rosinality's StyleGAN (style-based-gan-pytorch) on this machine.

    python experiments/benchmark_reference.py --rosinality DIR [--resolution 16 --batch 8 --rounds 6 --steps 10]

DIR is a checkout of https://github.com/rosinality/style-based-gan-pytorch (its ``model.py`` is
imported; nothing of it is copied here). Both sides train the same architecture: 512 channels at
every resolution, z = w = 512, 8 mapping layers, WGAN-GP with drift 0.001, style mixing 0.9, the
blurred critic, an EMA generator, Adam (0, 0.99), at the final stage without fade-in. The
reference's step is its ``train.py`` loop body, written out here; t2f's is
``experiments/benchmark.py``'s ``bare_step`` (the framework's overhead is measured there with
``--bare``). Rounds alternate between the two on one fixed batch, so that the machine's drift
falls on both alike; the median of each side's rounds is printed with their ratio.
"""

from __future__ import annotations

import argparse
import importlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import bare_step, pin_stage  # noqa: E402

from t2f.train import compose_run_config, fill_from_data  # noqa: E402


def reference_step(g, d, g_ema, opt_g, opt_d, real: torch.Tensor, step: int, code: int) -> None:
    """One iteration of rosinality's ``train.py`` (wgan-gp, --mixing, n_critic 1)."""
    n = real.shape[0]
    for p in g.parameters():
        p.requires_grad_(False)
    for p in d.parameters():
        p.requires_grad_(True)
    d.zero_grad()
    real_predict = d(real, step=step, alpha=1)
    real_predict = real_predict.mean() - 0.001 * (real_predict ** 2).mean()
    (-real_predict).backward()
    if random.random() < 0.9:
        a, b, c, e = torch.randn(4, n, code).unbind(0)
        inputs_d, inputs_g = [a, b], [c, e]
    else:
        inputs_d, inputs_g = torch.randn(2, n, code).unbind(0)
    fake = g(inputs_d, step=step, alpha=1)
    d(fake, step=step, alpha=1).mean().backward()
    eps = torch.rand(n, 1, 1, 1)
    x_hat = (eps * real.data + (1 - eps) * fake.data).requires_grad_(True)
    grad, = torch.autograd.grad(d(x_hat, step=step, alpha=1).sum(), x_hat, create_graph=True)
    (10 * ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()).backward()
    opt_d.step()
    g.zero_grad()
    for p in g.parameters():
        p.requires_grad_(True)
    for p in d.parameters():
        p.requires_grad_(False)
    (-d(g(inputs_g, step=step, alpha=1), step=step, alpha=1).mean()).backward()
    opt_g.step()
    with torch.no_grad():
        for mine, theirs in zip(g_ema.parameters(), g.parameters()):
            mine.mul_(0.999).add_(theirs, alpha=0.001)


def build_reference(checkout: Path, lr: float = 0.001):
    sys.path.insert(0, str(checkout))
    model = importlib.import_module("model")
    g, d, g_ema = model.StyledGenerator(512), model.Discriminator(), model.StyledGenerator(512)
    g_ema.load_state_dict(g.state_dict())
    g_ema.train(False)
    opt_g = torch.optim.Adam(g.generator.parameters(), lr=lr, betas=(0.0, 0.99))
    opt_g.add_param_group({"params": g.style.parameters(), "lr": lr * 0.01, "mult": 0.01})
    opt_d = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.0, 0.99))
    return g, d, g_ema, opt_g, opt_d


def build_t2f(resolution: int, batch: int, out: str, overrides: list[str]):
    cfg = compose_run_config([
        "model=stylegan", f"dataset.resolution={resolution}", f"dataset.batch_size={batch}",
        "dataset.num_workers=0", "model.generator.fmap_base=8192", "model.discriminator.fmap_base=8192",
        "model.generator.fmap_max=512", "model.discriminator.fmap_max=512", "model.generator.z_dim=512",
        "model.generator.w_dim=512", "trainer.precision=32-true", "logger=none", *overrides], out)
    datamodule = instantiate(cfg.dataset)
    datamodule.setup("fit")
    fill_from_data(cfg, datamodule)
    module = instantiate(cfg.model)
    module.setup("fit")
    pin_stage(module, None)  # the final stage, no fade-in
    opt_g, opt_d = module.configure_optimizers()
    batch_dict = next(iter(datamodule.train_dataloader()))
    return module, opt_g, opt_d, batch_dict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for t2f's side, e.g. model.channels_last=false")
    parser.add_argument("--rosinality", type=Path, required=True, help="checkout of rosinality/style-based-gan-pytorch")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds per side")
    parser.add_argument("--steps", type=int, default=10, help="steps timed per round (after 3 warm-up steps)")
    args = parser.parse_args()
    if not (args.rosinality / "model.py").is_file():
        raise SystemExit(f"--rosinality {args.rosinality}: no model.py there; give a checkout of "
                         "rosinality/style-based-gan-pytorch")
    torch.manual_seed(0)
    random.seed(0)
    step = int(round(torch.log2(torch.tensor(args.resolution / 4)).item()))
    reference = build_reference(args.rosinality)
    with tempfile.TemporaryDirectory() as out:
        module, opt_g, opt_d, batch = build_t2f(args.resolution, args.batch, out, args.overrides)
    real = F.interpolate(batch["image"], size=args.resolution, mode="area") if batch["image"].shape[-1] != args.resolution \
        else batch["image"]
    sides = {
        "rosinality": lambda: reference_step(*reference, real, step, 512),
        "t2f": lambda: bare_step(module, batch, opt_g, opt_d),
    }
    params = {"rosinality": (sum(p.numel() for p in reference[0].parameters()),
                             sum(p.numel() for p in reference[1].parameters())),
              "t2f": (sum(p.numel() for p in module.generator.parameters()),
                      sum(p.numel() for p in module.discriminator.parameters()))}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for run in sides.values():
        for _ in range(3):
            run()
    for _ in range(args.rounds):
        for name, run in sides.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                run()
            rates[name].append(args.steps * args.batch / (time.perf_counter() - start))
    print(f"resolution={args.resolution} batch={args.batch} threads={torch.get_num_threads()} torch={torch.__version__}")
    for name, values in rates.items():
        g, d = params[name]
        print(f"{name:>10}: {statistics.median(values):6.2f} images/s (rounds {' '.join(f'{v:.2f}' for v in values)}); "
              f"G {g / 1e6:.2f}M, D {d / 1e6:.2f}M parameters")
    print(f"t2f / rosinality = {statistics.median(rates['t2f']) / statistics.median(rates['rosinality']):.3f}")


if __name__ == "__main__":
    main()
