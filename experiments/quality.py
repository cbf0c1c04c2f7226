"""Quality on real faces: a t2f model against a plain PyTorch DCGAN at the same budget.

    python experiments/quality.py model=dcgan dataset=celeba dataset.root=/data/celeba \
        dataset.resolution=32 --kimg 100 [--samples 2000] [--seed 0] [--no-reference] [--out FILE.json]

Any other argument is a Hydra override, exactly as for ``python run.py``. The script

1. trains the composed config with ``t2f.train.train`` for ``--kimg`` kimg (``model.total_kimg``;
   a progressive model's growth schedule is stretched to that length, every stage in proportion),
   in a temporary run directory with ``logger=none`` unless a logger is given;
2. holds out real images that training never sees (the datamodule's ``held_out_set``): for
   CelebA every partition outside ``dataset.train_split`` (val + test for ``train``); for other
   datasets the validation split, and datasets with ``val_fraction`` (folder) get
   ``--val-fraction`` of the folder held out (a fixed ``dataset.split_seed`` split) when their
   config holds none out;
3. scores ProGAN's multi-scale SWD (x1e3, ``t2f.metrics.suite.MetricSuite``, the protocol of
   ``metrics=swd``) of ``--samples`` images of the EMA and of the raw generator against all
   held-out images, at the model's final resolution. Text models get captions of the held-out
   images (``datamodule.sample_captions``), as in every t2f evaluation;
4. trains a minimal plain-PyTorch DCGAN (the PyTorch example: its own G and D below, N(0, 0.02)
   init, Adam 2e-4 (0.5, 0.999), BCE-with-logits, non-saturating G loss) with the widths and
   latent size of ``model=dcgan``, on the same training loader (same cache, crop, flips, batch
   size), for the images the t2f model saw, and scores its raw generator in eval mode the same way;
5. prints a table (SWD, images/s and minutes of training; images/s is images seen over the
   wall time of the training loop, data preparation excluded), the t2f/reference ratios, and
   writes PNG grids of 64 faces per generator and a JSON with every figure and the command line.

A fourth row scores real training images against the held-out ones: the SWD floor at this
sample count. Results of this repository are in ``experiments/results/quality.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn
from torch.utils.data import Dataset

from t2f.conf import CONFIG_DIR
from t2f.data.celeba import SPLITS, CelebADataModule
from t2f.grids import grid_image
from t2f.growth import ProgressiveSchedule
from t2f.metrics.suite import Evaluation, MetricSuite
from t2f.train import train

GRID_SIZE = 64  # faces per PNG grid (8 x 8)
PARTITION_NAMES = {0: "train", 1: "val", 2: "test"}


# ----------------------------------------------------------------------------- the reference
def reference_generator(resolution: int, latent_dim: int, width: int) -> nn.Sequential:
    """The PyTorch DCGAN example's G: 4x4 projection of z, then stride-2 transposed convs that
    halve the channels (width * 2^k ... width) while doubling the resolution."""
    ups = int(math.log2(resolution)) - 2
    channels = [width * 2 ** (ups - 1 - i) for i in range(ups)]
    layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, channels[0], 4, 1, 0, bias=False),
                               nn.BatchNorm2d(channels[0]), nn.ReLU(True)]
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
    layers += [nn.ConvTranspose2d(channels[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def reference_discriminator(resolution: int, width: int) -> nn.Sequential:
    """The PyTorch DCGAN example's D without its final sigmoid (one logit per image)."""
    ups = int(math.log2(resolution)) - 2
    channels = [width * 2**i for i in range(ups)]
    layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)]
    layers += [nn.Conv2d(channels[-1], 1, 4, 1, 0, bias=False), nn.Flatten(0)]
    return nn.Sequential(*layers)


def weights_init(m: nn.Module) -> None:
    """The example's init: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def autocast_for(precision: str | int, device: torch.device):
    """The autocast a Lightning precision setting means, so the reference computes like t2f did."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def train_reference(loader, images: int, resolution: int, latent_dim: int, g_width: int, d_width: int,
                    device: torch.device, precision: str | int, channels_last: bool, seed: int
                    ) -> tuple[nn.Module, dict[str, float]]:
    """The PyTorch DCGAN example's loop until ``images`` real images have been shown to D.

    Per batch: one D step on the real batch and on G's fakes, then one G step on the same fakes
    (non-saturating loss). Timed like t2f: wall time of the loop, loader start-up included."""
    torch.manual_seed(seed)
    netG = reference_generator(resolution, latent_dim, g_width).to(device)
    netD = reference_discriminator(resolution, d_width).to(device)
    netG.apply(weights_init)
    netD.apply(weights_init)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    netG.to(memory_format=memory)
    netD.to(memory_format=memory)
    opt_g = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    criterion = nn.BCEWithLogitsLoss()
    scaler = torch.amp.GradScaler(device.type, enabled=str(precision) == "16-mixed")
    seen, steps = 0, 0
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    while seen < images:
        for batch in loader:
            real = batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory)
            b = real.shape[0]
            ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
            noise = torch.randn(b, latent_dim, 1, 1, device=device)
            with autocast_for(precision, device):
                fake = netG(noise)
                loss_d = criterion(netD(real).float(), ones) + criterion(netD(fake.detach()).float(), zeros)
            opt_d.zero_grad(set_to_none=True)
            scaler.scale(loss_d).backward()
            scaler.step(opt_d)
            with autocast_for(precision, device):
                loss_g = criterion(netD(fake).float(), ones)
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(loss_g).backward()
            scaler.step(opt_g)
            scaler.update()
            seen += b
            steps += 1
            if steps % 200 == 0:
                print(f"[reference] {seen / 1000:.1f}/{images / 1000:.1f} kimg  loss_d {loss_d.item():.3f}  "
                      f"loss_g {loss_g.item():.3f}", flush=True)
            if seen >= images:
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return netG, {"images": seen, "seconds": seconds, "images_per_s": seen / seconds,
                  "load_average": [load_start, os.getloadavg()[0]]}


# ----------------------------------------------------------------------------- samplers for MetricSuite
class RawGenerator:
    """The trained module seen through its raw (non-EMA) generator: ``MetricSuite.evaluate``
    samples with ``module.generate(inputs)``, which uses the EMA."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def generate(self, inputs: dict[str, Any], ema: bool = True) -> Tensor:
        return self._module.generate(inputs, ema=False)


class ReferenceSampler:
    """The reference generator behind the two calls ``MetricSuite.evaluate`` makes: N(0, I)
    latents drawn like ``GANModule.sample_inputs`` of a DCGAN (so a seed gives the same z), eval mode."""

    def __init__(self, generator: nn.Module, latent_dim: int, device: torch.device) -> None:
        self.generator, self.latent_dim, self.device = generator, latent_dim, device

    def sample_inputs(self, n: int, conditions: dict | None = None,
                      generator: torch.Generator | None = None, noise: bool = True) -> dict[str, Tensor]:
        return {"z": torch.randn(n, self.latent_dim, generator=generator).to(self.device)}

    def noise_inputs(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return {}  # z is all its randomness

    @torch.no_grad()
    def generate(self, inputs: dict[str, Tensor], ema: bool = True) -> Tensor:
        self.generator.eval()
        z = inputs["z"]
        return self.generator(z.view(z.shape[0], -1, 1, 1)).float().clamp(-1, 1)


class RealSampler:
    """Training images as if generated: their SWD to the held-out images is the floor that a
    perfect generator reaches with this many samples."""

    def __init__(self, dataset: Dataset, device: torch.device) -> None:
        self.dataset, self.device = dataset, device

    def sample_inputs(self, n: int, conditions: dict | None = None,
                      generator: torch.Generator | None = None, noise: bool = True) -> dict[str, Tensor]:
        count = len(self.dataset)
        index = torch.randperm(count, generator=generator)[:n] if n <= count else \
            torch.randint(count, (n,), generator=generator)
        return {"index": index}

    def generate(self, inputs: dict[str, Tensor], ema: bool = True) -> Tensor:
        images = [self.dataset[int(i)]["image"] for i in inputs["index"]]
        return torch.stack(images).to(self.device)

    def noise_inputs(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return {}


# ----------------------------------------------------------------------------- training the t2f model
class Capture(pl.Callback):
    """Keeps the trained module and datamodule for evaluation and times the training loop.

    ``train()`` prepares the data before ``fit``, so the clock (``on_train_start`` to
    ``on_train_end``) excludes it; it includes everything else a run does (loader start-up,
    sample grids, checkpoints), since a t2f user pays for those too."""

    def __init__(self, kimg: float | None) -> None:
        self.kimg = kimg
        self.module: Any = None
        self.trainer: pl.Trainer | None = None
        self.start = self.seconds = 0.0
        self.images = 0
        self.load_average: list[float] = []  # 1-minute load at start and end: timings on a shared machine

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.module, self.trainer = pl_module, trainer
        total = float(pl_module.total_kimg)
        print(f"[quality] training {type(pl_module).__name__} for {total:g} kimg", flush=True)
        if self.kimg is not None and abs(total - self.kimg) > 1e-6:
            print(f"[quality] note: the model trains {total:g} kimg, not --kimg {self.kimg:g} (model.total_kimg "
                  f"was given explicitly). The reference gets the same images.", flush=True)
        self.images = pl_module.images_seen
        self.load_average = [os.getloadavg()[0]]
        self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        self.seconds = time.perf_counter() - self.start
        self.images = pl_module.images_seen - self.images
        self.load_average.append(os.getloadavg()[0])


def scale_schedule(cfg: DictConfig, kimg: float) -> None:
    """A progressive model's growth schedule stretched to ``kimg`` in all, every stage in the
    same proportion (its per-resolution lengths as the config gives them for this resolution)."""
    schedule = dict(OmegaConf.to_container(cfg.model.schedule, resolve=True))
    if schedule.get("epochs") is not None:
        raise SystemExit("--kimg cannot scale a schedule given in epochs: give model.schedule.kimg instead")
    schedule.pop("_target_", None)
    growth = ProgressiveSchedule(**schedule)
    factor = kimg / growth.total_kimg
    with open_dict(cfg):
        cfg.model.schedule.kimg = {str(r): k * factor for r, k in zip(growth.resolutions, growth.kimg_per_stage)}
    print(f"[quality] growth schedule scaled by {factor:.3g} to {kimg:g} kimg: "
          + ", ".join(f"{r} px {k * factor:.3g}" for r, k in zip(growth.resolutions, growth.kimg_per_stage)), flush=True)


def given(overrides: list[str], key: str) -> bool:
    """Whether the user's Hydra overrides set ``key`` (``key=``, ``+key=``, ``++key=``)."""
    return any(o.lstrip("+~").split("=", 1)[0] == key for o in overrides)


def compose_config(overrides: list[str], args: argparse.Namespace, run_dir: str) -> tuple[DictConfig, list[str]]:
    """The run's config: the user's overrides plus this script's defaults (quiet logger, kimg,
    a held-out share of folder datasets). Returns it with the effective override list."""
    extra = []
    if not given(overrides, "logger"):
        extra.append("logger=none")
    if not given(overrides, "print_config"):
        extra.append("print_config=false")
    if args.seed is not None:
        extra.append(f"seed={args.seed}")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, *extra], return_hydra_config=True)
        if args.kimg is not None and "total_kimg" in cfg.model and not given(overrides, "model.total_kimg"):
            extra.append(f"model.total_kimg={args.kimg:g}")
        if ("val_fraction" in cfg.dataset and float(cfg.dataset.val_fraction) == 0.0
                and not given(overrides, "dataset.val_fraction")):
            extra.append(f"dataset.val_fraction={args.val_fraction:g}")
            print(f"[quality] holding out dataset.val_fraction={args.val_fraction:g} of the images "
                  f"(split_seed={cfg.dataset.get('split_seed')}) for SWD: training never sees them", flush=True)
        cfg = compose("config", overrides=[*overrides, *extra], return_hydra_config=True)
    if int(cfg.trainer.get("num_nodes", 1)) != 1 or str(cfg.trainer.get("devices", 1)) != "1":
        raise SystemExit("experiments/quality.py trains and scores in one process: use one device "
                         "(trainer.devices=1 trainer.num_nodes=1)")
    if args.kimg is not None and cfg.model.get("schedule") is not None:
        scale_schedule(cfg, args.kimg)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = run_dir
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg, [*overrides, *extra]


# ----------------------------------------------------------------------------- held-out images
def held_out_set(datamodule: Any) -> tuple[Dataset, str]:
    """Real images training never sees (``held_out_set``: CelebA's partitions outside
    ``dataset.train_split``, other datasets' validation split), and what they are."""
    held = datamodule.held_out_set()
    if held is None or len(held) == 0:
        raise ValueError(f"{type(datamodule).__name__} holds no images out of training: give it a validation "
                         "split (e.g. dataset.val_fraction=0.2) or a train_split that leaves partitions out")
    if isinstance(datamodule, CelebADataModule):
        names = "+".join(PARTITION_NAMES[p] for p in (0, 1, 2) if p not in SPLITS[datamodule.train_split])
        return held, f"celeba partitions {names} (train_split={datamodule.train_split})"
    return held, f"validation split of {type(datamodule).__name__}"


# ----------------------------------------------------------------------------- output
def save_grid(images: Tensor, labels: list[str] | None, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(images, nrow=int(round(GRID_SIZE**0.5)), row_labels=labels).save(path)
    return str(path)


def row(name: str, swd: float | None, images_per_s: float | None, minutes: float | None) -> str:
    fmt = lambda v, spec: "—" if v is None else format(v, spec)  # noqa: E731
    return f"| {name} | {fmt(swd, '.2f')} | {fmt(images_per_s, '.1f')} | {fmt(minutes, '.1f')} |"


def machine() -> dict[str, Any]:
    """Where the timings come from (they are only comparable on one machine)."""
    return {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kimg", type=float, default=None,
                        help="training length (model.total_kimg); default: the model's own")
    parser.add_argument("--samples", type=int, default=2000, help="generated images per SWD")
    parser.add_argument("--seed", type=int, default=None, help="seed= of the run (weights, data order, "
                        "evaluated latents and captions, reference); default: the config's")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share held out of datasets whose config holds none out (folder)")
    parser.add_argument("--no-reference", action="store_true", help="skip the plain PyTorch DCGAN")
    parser.add_argument("--out", default=None, help="JSON results; the PNG grids go to a folder of the same "
                        "name (default outputs/quality/<name>.json)")
    parser.add_argument("--keep-run", action="store_true", help="keep the t2f run directory (checkpoints, "
                        "sample grids over training, logs) next to the JSON")
    args, overrides = parser.parse_known_args()
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        parser.error(f"unknown option(s) {' '.join(bad)}; Hydra overrides look like key=value")
    command = shlex.join(["python", *sys.argv])

    with tempfile.TemporaryDirectory(prefix="t2f-quality-") as tmp:
        run_dir = os.path.join(tmp, "run")
        cfg, effective = compose_config(overrides, args, run_dir)
        choices = cfg.hydra.runtime.choices
        kimg_name = f"{args.kimg:g}kimg" if args.kimg is not None else "default"
        name = f"{choices.model}_{choices.dataset}{cfg.dataset.resolution}_{kimg_name}"
        out = Path(args.out) if args.out else Path("outputs") / "quality" / f"{name}.json"
        grid_dir = out.with_suffix("")
        seed = int(cfg.seed)

        # 1. the t2f model
        capture = Capture(args.kimg)
        train(cfg, extra_callbacks=[capture])
        module, trainer = capture.module, capture.trainer
        datamodule = trainer.datamodule
        device = trainer.strategy.root_device
        module.to(device)  # the strategy hands the module back on the CPU after fit
        precision = trainer.precision
        t2f_train = {"images": capture.images, "seconds": capture.seconds,
                     "images_per_s": capture.images / capture.seconds, "precision": str(precision),
                     "total_kimg": float(module.total_kimg), "load_average": capture.load_average}

        # 2. held-out images: evaluation (and caption sampling for text models) reads val_set
        heldout, heldout_what = held_out_set(datamodule)
        datamodule.val_set = heldout  # training is over; MetricSuite and sample_captions read val_set
        print(f"[quality] SWD reference set: {len(heldout)} held-out images ({heldout_what}); "
              f"{len(datamodule.train_set)} training images", flush=True)

        # 3. SWD of EMA and raw samples (real descriptors computed once, in this run's temp cache)
        suite = MetricSuite(swd={}, num_samples=args.samples, num_real=len(heldout), seed=seed,
                            cache_dir=os.path.join(tmp, "metrics"), real_split="val")
        dataset_config = {**OmegaConf.to_container(cfg.dataset, resolve=True), "quality_heldout": heldout_what}

        def score(sampler: Any, label: str) -> Evaluation:
            t0 = time.perf_counter()
            ev = suite.evaluate(sampler, datamodule, dataset_config, seed=seed)
            print(f"[quality] SWD {label}: {ev.values['swd']:.2f} ({time.perf_counter() - t0:.0f}s)", flush=True)
            return ev

        results: dict[str, Evaluation] = {"t2f_ema": score(module, "t2f EMA"),
                                          "t2f_raw": score(RawGenerator(module), "t2f raw")}
        inputs, labels = module.fixed_sample_inputs(GRID_SIZE, int(round(GRID_SIZE**0.5)), seed)
        grids = {"t2f_ema": save_grid(module.generate(inputs, ema=True), labels, grid_dir / "t2f_ema.png"),
                 "t2f_raw": save_grid(module.generate(inputs, ema=False), labels, grid_dir / "t2f_raw.png")}

        # 4. the plain PyTorch reference, same images, loader and batch size
        reference: dict[str, Any] | None = None
        resolution = int(module.resolution)
        if not args.no_reference:
            dcgan = cfg.model if choices.model == "dcgan" else OmegaConf.load(CONFIG_DIR / "model" / "dcgan.yaml")
            latent_dim, g_width = int(dcgan.generator.latent_dim), int(dcgan.generator.width)
            d_width = int(dcgan.discriminator.width)
            datamodule.set_batch_schedule(None)  # dataset.batch_size, not a progressive schedule's
            loader = datamodule.train_dataloader()
            channels_last = bool(cfg.model.get("channels_last", False))
            print(f"[quality] reference DCGAN: {resolution}px, z {latent_dim}, widths G {g_width} D {d_width}, "
                  f"batch {datamodule.batch_size}, {capture.images / 1000:g} kimg, precision {precision}, "
                  f"channels_last={channels_last}", flush=True)
            netG, reference = train_reference(loader, capture.images, resolution, latent_dim, g_width, d_width,
                                              device, precision, channels_last, seed)
            reference.update(latent_dim=latent_dim, g_width=g_width, d_width=d_width,
                             batch_size=datamodule.batch_size, precision=str(precision), channels_last=channels_last)
            sampler = ReferenceSampler(netG, latent_dim, device)
            results["reference"] = score(sampler, "reference")
            z = sampler.sample_inputs(GRID_SIZE, generator=torch.Generator().manual_seed(seed))
            grids["reference"] = save_grid(sampler.generate(z), None, grid_dir / "reference.png")
        results["real_train"] = score(RealSampler(datamodule.train_set, device), "real training images (floor)")

        if args.keep_run:
            import shutil
            shutil.copytree(run_dir, grid_dir / "run", dirs_exist_ok=True)

    # 5. report
    swd = {k: ev.values["swd"] for k, ev in results.items()}
    t2f_ips, t2f_min = t2f_train["images_per_s"], t2f_train["seconds"] / 60
    ref_ips = reference["images_per_s"] if reference else None
    ref_min = reference["seconds"] / 60 if reference else None
    ratios = {}
    if reference:
        ratios = {"swd_ema_over_reference": swd["t2f_ema"] / swd["reference"],
                  "swd_raw_over_reference": swd["t2f_raw"] / swd["reference"],
                  "images_per_s_t2f_over_reference": t2f_ips / ref_ips}
    protocol = results["t2f_ema"].protocols["swd"].replace(split=f"held out: {heldout_what}")
    lines = [
        f"model={choices.model} dataset={choices.dataset} {resolution}px, {capture.images / 1000:g} kimg, "
        f"seed {seed}, device {device}, precision {precision}",
        f"SWD x1e3 (mean over {', '.join(k.split('/')[1] for k in results['t2f_ema'].values if k.startswith('swd/'))}"
        f" px): {args.samples} generated vs {len(heldout)} held-out real images ({heldout_what})",
        "",
        "| generator | SWD x1e3 | images/s | train min |",
        "|---|---:|---:|---:|",
        row("t2f EMA", swd["t2f_ema"], t2f_ips, t2f_min),
        row("t2f raw", swd["t2f_raw"], t2f_ips, t2f_min),
    ]
    loads = [f"t2f {t2f_train['load_average'][0]:.1f} -> {t2f_train['load_average'][1]:.1f}"]
    if reference:
        lines.append(row("reference DCGAN (raw)", swd["reference"], ref_ips, ref_min))
    lines.append(row("real training images (floor)", swd["real_train"], None, None))
    if reference:
        loads.append(f"reference {reference['load_average'][0]:.1f} -> {reference['load_average'][1]:.1f}")
    lines += ["", f"1-minute load average at start -> end of training ({os.cpu_count()} CPUs): {', '.join(loads)}"]
    if reference:
        lines += ["", f"t2f / reference: SWD EMA {ratios['swd_ema_over_reference']:.2f}, "
                      f"SWD raw {ratios['swd_raw_over_reference']:.2f}, "
                      f"images/s {ratios['images_per_s_t2f_over_reference']:.2f}"]
    lines += ["", f"grids: {grid_dir}", f"results: {out}"]
    table = "\n".join(lines)
    print("\n" + table, flush=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": command,
        "overrides": effective,
        "name": name,
        "model": choices.model, "dataset": choices.dataset, "resolution": resolution, "seed": seed,
        "kimg": capture.images / 1000,
        "samples": args.samples,
        "held_out": {"images": len(heldout), "what": heldout_what, "training_images": len(datamodule.train_set)},
        "swd_protocol": protocol.to_dict(),
        "swd_protocol_text": protocol.describe(),
        "swd": {k: ev.values for k, ev in results.items()},
        "t2f_training": t2f_train,
        "reference_training": reference,
        "ratios": ratios,
        "grids": grids,
        "table": table,
        "machine": {**machine(), "device": str(device)},
        "config": module.run_config,
    }
    out.write_text(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
