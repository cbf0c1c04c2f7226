"""Training throughput (images/s) of a model config on this machine, measured after warm-up.

    python experiments/benchmark.py model=dcgan dataset.resolution=64 [--warmup 10 --steps 50] [--bare]

Any Hydra override works, so versions and configs can be compared on the same machine.
Progressive models are measured at the stage given by `--stage` (default: the last one);
`--stage all` measures every stage, each in its own process (so that each peak memory is its
own), and prints one table of images/s, seconds per kimg and peak memory against resolution.
`--bare` also times the same step in a plain PyTorch loop (the module's networks, losses,
optimizers and EMA, the same loader, no Lightning, no logging, no callbacks) on a fresh copy of
the model, and prints the framework's overhead as the ratio of the two.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from t2f.conf import CONFIG_DIR
from t2f.growth import ProgressiveSchedule
from t2f.precision import resolve_precision
from t2f.train import compose_run_config, fill_from_data


class Timer(pl.Callback):
    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.images = 0
        self.start = 0.0
        self.elapsed = 0.0
        self.first = 0.0  # the first batch's seconds: with model.compile=true, mostly compilation

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.first = time.perf_counter()
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.first = time.perf_counter() - self.first
        if batch_idx >= self.warmup:
            self.images += batch["image"].shape[0] * trainer.world_size
        if batch_idx == self.warmup + self.steps - 1:
            self.elapsed = time.perf_counter() - self.start
            trainer.should_stop = True


def bare_step(module, batch: dict, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer) -> None:
    """``GANModule.training_step`` as a plain loop writes it: one critic step with its penalties,
    a generator step every ``d_steps_per_g`` critic steps (the other network frozen, as Lightning's
    ``toggled_optimizer`` does), then the EMA update. No logging, no ADA signal."""
    d_params = [p for g in opt_d.param_groups for p in g["params"]]
    g_params = [p for g in opt_g.param_groups for p in g["params"]]
    state = module.growth
    players = module.players(state)
    real = module.prepare_real(batch["image"], state)
    if module.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    n = real.shape[0]
    for p in g_params:
        p.requires_grad_(False)
    for p in d_params:
        p.requires_grad_(True)
    d_loss, _ = module.loss.critic_loss(players, real, module.conditions(batch), step=module.batches_seen)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    module.batches_seen += 1
    if module.batches_seen % module.d_steps_per_g == 0:
        for p in d_params:
            p.requires_grad_(False)
        for p in g_params:
            p.requires_grad_(True)
        with torch.no_grad():
            conditions = module.conditions(batch)
        g_loss, _ = module.loss.generator_loss(players, n, conditions, real.device)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
    module.images_seen += n
    module.update_ema(n)


def pin_stage(module, stage: int | None) -> int | None:
    """Hold a progressive module at ``stage`` (default: its last), without fade-in, however many
    images the timing shows it: a one-stage schedule at that resolution. Returns the stage."""
    if module.schedule is None:
        return None
    if stage is None:
        stage = module.schedule.start_stage + len(module.schedule.resolutions) - 1
    resolution = 4 * 2 ** stage
    module.schedule = ProgressiveSchedule(resolution, kimg=1e9, start_resolution=resolution)
    return stage


def bare_throughput(module, datamodule, warmup: int, steps: int, stage: int | None, device: torch.device,
                    precision: str) -> float:
    """Images/s of :func:`bare_step` over ``steps`` batches after ``warmup``, on ``device``."""
    if str(precision) not in ("32-true", "32", "bf16-mixed"):
        raise SystemExit(f"--bare supports trainer.precision=32-true or bf16-mixed, got {precision}")
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if str(precision) == "bf16-mixed"
                else contextlib.nullcontext())
    module.to(device)
    module.setup("fit")
    pin_stage(module, stage)
    opt_g, opt_d = module.configure_optimizers()
    loader = iter(datamodule.train_dataloader())
    images, start = 0, 0.0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        try:
            batch = next(loader)
        except StopIteration:
            loader = iter(datamodule.train_dataloader())
            batch = next(loader)
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with autocast:
            bare_step(module, batch, opt_g, opt_d)
        if i >= warmup:
            images += batch["image"].shape[0]
    sync(device)
    return images / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=dcgan")
    parser.add_argument("--warmup", type=int, default=10, help="batches before timing starts")
    parser.add_argument("--steps", type=int, default=50, help="batches timed")
    parser.add_argument("--stage", default=None, help="progressive stage to time (0 = 4 px), or all")
    parser.add_argument("--bare", action="store_true", help="also time the step in a plain PyTorch loop")
    args = parser.parse_args()
    if args.stage == "all":
        return stage_table(args)
    args.stage = None if args.stage is None else int(args.stage)

    with tempfile.TemporaryDirectory() as out:
        cfg = compose_run_config(args.overrides, out)
        datamodule = instantiate(cfg.dataset)
        datamodule.setup("fit")
        fill_from_data(cfg, datamodule)
        with open_dict(cfg):
            cfg.trainer.precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
        module = instantiate(cfg.model)
        fresh = copy.deepcopy(module) if args.bare else None
        stage = pin_stage(module, args.stage)
        module.total_kimg = float("inf")
        timer = Timer(args.warmup, args.steps)
        trainer = instantiate(cfg.trainer, callbacks=[timer], logger=False, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.fit(module, datamodule=datamodule)

    print(f"model={module.generator.family} resolution={module.resolution} "
          f"batch={cfg.dataset.batch_size} device={trainer.strategy.root_device} precision={trainer.precision} "
          f"torch={torch.__version__} threads={torch.get_num_threads()} cpus={os.cpu_count()}")
    print(f"throughput: {timer.images / timer.elapsed:.1f} images/s "
          f"({timer.images} images in {timer.elapsed:.2f}s after {args.warmup} warm-up batches); "
          f"{timer.elapsed / timer.images * 1000:.2f} s/kimg")
    print(f"first batch: {timer.first:.2f}s (with model.compile=true, mostly compilation); "
          f"peak memory: {peak_memory()}")
    if fresh is not None:
        torch.manual_seed(cfg.seed)
        bare = bare_throughput(fresh, datamodule, args.warmup, args.steps, stage, trainer.strategy.root_device,
                               trainer.precision)
        lightning = timer.images / timer.elapsed
        print(f"bare PyTorch loop: {bare:.1f} images/s; t2f (Lightning) / bare = {lightning / bare:.3f}")


def stage_table(args: argparse.Namespace) -> None:
    """One process per stage of the progressive model the overrides select, then one table."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=args.overrides)
    schedule = cfg.model.get("schedule")
    if schedule is None:
        raise SystemExit("--stage all needs a progressive model (model=t2f or model=stylegan): "
                         f"{cfg.model.generator._target_} does not grow")
    first, last = int(math.log2(int(schedule.start_resolution) // 4)), int(math.log2(int(cfg.dataset.resolution) // 4))
    rows = ["| stage | px | images/s | s/kimg | peak memory |", "|---:|---:|---:|---:|---|"]
    for stage in range(first, last + 1):
        cmd = [sys.executable, __file__, *args.overrides, "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--stage", str(stage)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        found = re.search(r"throughput: ([\d.]+) images/s.*?([\d.]+) s/kimg", done.stdout)
        if found is None:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"stage {stage} failed (exit {done.returncode}): {last}")
        rate, per_kimg = found.groups()
        memory = re.search(r"peak memory: (.*)", done.stdout).group(1)
        if stage == first:
            print(re.sub(r" resolution=\S+", "", re.search(r"model=.*", done.stdout).group(0)))
        rows.append(f"| {stage} | {4 * 2 ** stage} | {rate} | {per_kimg} | {memory} |")
    print("\n".join(rows))


def peak_memory() -> str:
    """The process's peak resident memory (Linux reports KiB), and the GPU's peak allocation."""
    text = f"CPU RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated"
    return text


if __name__ == "__main__":
    sys.exit(main())
