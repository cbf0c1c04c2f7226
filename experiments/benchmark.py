"""Training throughput (images/s) of a model config on this machine, measured after warm-up.

    python experiments/benchmark.py model=dcgan dataset.resolution=64 [--warmup 10 --steps 50]

Any Hydra override works, so versions and configs can be compared on the same machine.
Progressive models are measured at the stage given by `--stage` (default: the last one).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from t2f.conf import CONFIG_DIR
from t2f.precision import resolve_precision


class Timer(pl.Callback):
    def __init__(self, warmup: int, steps: int, stage: int | None) -> None:
        self.warmup, self.steps, self.stage = warmup, steps, stage
        self.images = 0
        self.start = 0.0
        self.elapsed = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self.stage is not None and hasattr(module, "schedule"):
            module.stage, module.alpha = self.stage, 1.0
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.images += batch["image"].shape[0] * trainer.world_size
        if batch_idx == self.warmup + self.steps - 1:
            self.elapsed = time.perf_counter() - self.start
            trainer.should_stop = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=dcgan")
    parser.add_argument("--warmup", type=int, default=10, help="batches before timing starts")
    parser.add_argument("--steps", type=int, default=50, help="batches timed")
    parser.add_argument("--stage", type=int, default=None, help="progressive stage to time")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out, initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=args.overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = out
            cfg.hydra.job.num = 0
        HydraConfig().set_config(cfg)
        datamodule = instantiate(cfg.dataset)
        datamodule.setup("fit")
        with open_dict(cfg):
            if "vocab_size" in cfg.model.keys():
                cfg.model.vocab_size = len(datamodule.vocab)
            schedule = cfg.model.get("schedule")
            if schedule is not None and "images_per_epoch" in schedule.keys():
                schedule.images_per_epoch = len(datamodule.train_set)
            cfg.trainer.precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
        module = instantiate(cfg.model)
        module.total_kimg = float("inf")
        stage = args.stage
        if stage is None and hasattr(module, "schedule"):
            stage = module.stage
        timer = Timer(args.warmup, args.steps, stage)
        trainer = instantiate(cfg.trainer, callbacks=[timer], logger=False, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.fit(module, datamodule=datamodule)

    resolution = getattr(module, "resolution", cfg.dataset.resolution)
    print(f"model={cfg.model._target_.rsplit('.', 1)[-1]} resolution={resolution} "
          f"batch={cfg.dataset.batch_size} device={trainer.strategy.root_device} precision={trainer.precision} "
          f"torch={torch.__version__} threads={torch.get_num_threads()} cpus={os.cpu_count()}")
    print(f"throughput: {timer.images / timer.elapsed:.1f} images/s "
          f"({timer.images} images in {timer.elapsed:.2f}s after {args.warmup} warm-up batches); "
          f"{timer.elapsed / timer.images * 1000:.2f} s/kimg")
    print(f"peak memory: {peak_memory()}")


def peak_memory() -> str:
    """The process's peak resident memory (Linux reports KiB), and the GPU's peak allocation."""
    text = f"CPU RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated"
    return text


if __name__ == "__main__":
    sys.exit(main())
