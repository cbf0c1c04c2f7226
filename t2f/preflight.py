"""Checks a run makes before it trains, each problem one line that names the config key.

Without them these surface late and far from their cause: a per-stage batch size larger than
the dataset as ``dataset.batch_size``'s fault when the stage begins, DDP without
``find_unused_parameters`` as hundreds of lines from every rank, and a resume after the
architecture or the vocabulary changed as kilobytes of state-dict key names. A finished run is
said to be finished instead of training one more batch.
"""

from __future__ import annotations

import json
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from t2f.checkpoints import checkpoint_config, checkpoint_vocab
from t2f.growth import ProgressiveSchedule
from t2f.utils import ConfigError, rank_zero_print

__all__ = ["check_resume", "check_trainer", "config_differences"]


def check_trainer(trainer: pl.Trainer, cfg: DictConfig, module: pl.LightningModule, train_images: int) -> None:
    """The trainer's strategy and every stage's batch size, before any process is started."""
    _check_strategy(trainer, cfg)
    schedule = getattr(module, "schedule", None)
    if isinstance(schedule, ProgressiveSchedule):
        _check_stage_batches(schedule, train_images // max(trainer.world_size, 1), trainer.world_size)


def _check_strategy(trainer: pl.Trainer, cfg: DictConfig) -> None:
    """Each step trains the generator or the critic, so DDP must allow parameters without gradients."""
    from pytorch_lightning.accelerators import CPUAccelerator
    from pytorch_lightning.strategies import DDPStrategy

    strategy = trainer.strategy
    if not isinstance(strategy, DDPStrategy) or getattr(strategy, "_ddp_kwargs", {}).get("find_unused_parameters"):
        return
    devices = OmegaConf.select(cfg, "trainer.devices")
    preset = "ddp_cpu" if isinstance(trainer.accelerator, CPUAccelerator) else "ddp"
    raise ConfigError(
        f"trainer.devices={devices} trains {trainer.world_size} processes with DDP, which needs "
        "find_unused_parameters=true here (each step trains the generator or the critic, not both): "
        f"use trainer={preset} trainer.devices={devices}, or trainer.strategy=ddp_find_unused_parameters_true")


def _check_stage_batches(schedule: ProgressiveSchedule, images: int, world_size: int) -> None:
    for resolution, batch in zip(schedule.resolutions, schedule.batch_sizes):
        if batch is not None and batch > images:
            where = f"the {images} training images per process" if world_size > 1 else f"the {images} training images"
            raise ConfigError(f"model.schedule.batch_size is {batch} at {resolution} px, more than {where}: "
                              "lower it (or null: dataset.batch_size)")


def check_resume(ckpt_path: str, cfg: DictConfig, module: pl.LightningModule, datamodule: Any) -> bool:
    """Whether the run that ``ckpt_path`` continues can go on with this config (else an error
    naming the config keys that differ from the checkpoint's); True when it is already finished."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    saved = (ckpt.get("t2f") or {}).get("config") or {}
    if saved:
        try:
            checkpoint_config(ckpt, ckpt_path)  # a checkpoint of a retired module: one line that says so
        except ValueError as error:
            raise ConfigError(f"cannot resume: {error}") from None
    vocab, ours = checkpoint_vocab(ckpt), getattr(datamodule, "vocab", None)
    if vocab is not None and ours is not None and vocab != ours:
        raise ConfigError(
            f"cannot resume from {ckpt_path}: this dataset's vocabulary ({len(ours)} words) differs from the "
            f"checkpoint's ({len(vocab)}){_changed(saved, cfg, 'dataset')}: resume with the dataset settings the "
            "run started with, or start a new run (another hydra.run.dir)")
    problem = _weights_misfit(ckpt.get("state_dict") or {}, module.state_dict())
    if problem:
        raise ConfigError(
            f"cannot resume from {ckpt_path}: its weights do not fit this model ({problem})"
            f"{_changed(saved, cfg, 'model')}: resume with the checkpoint's model settings, or start a new run "
            "(another hydra.run.dir)")
    return _finished(ckpt, ckpt_path, cfg, module)


def _weights_misfit(saved: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> str:
    """A short account of how two state dicts differ ("" when one loads into the other)."""
    missing = [k for k in current if k not in saved]
    unexpected = [k for k in saved if k not in current]
    shapes = [k for k in current if k in saved and tuple(saved[k].shape) != tuple(current[k].shape)]
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} tensor(s) of another shape, e.g. {k}: {tuple(saved[k].shape)} in the checkpoint, "
                     f"{tuple(current[k].shape)} now")
    if missing:
        parts.append(f"{len(missing)} missing from the checkpoint, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} the model lacks, e.g. {unexpected[0]}")
    return "; ".join(parts)


def config_differences(saved: Any, current: Any, prefix: str) -> list[str]:
    """``key: saved -> current`` for every leaf of two config sections that differs."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [line for key in dict.fromkeys([*saved, *current])
                for line in config_differences(saved.get(key), current.get(key), f"{prefix}.{key}")]
    if saved == current:
        return []
    return [f"{prefix}={json.dumps(current, default=str)} (the checkpoint's: {json.dumps(saved, default=str)})"]


def _changed(saved: dict[str, Any], cfg: DictConfig, section: str, limit: int = 4) -> str:
    current = OmegaConf.to_container(cfg[section], resolve=True) if section in cfg else {}
    lines = config_differences(saved.get(section), current, section) if section in saved else []
    if not lines:
        return ""
    more = f" and {len(lines) - limit} more" if len(lines) > limit else ""
    return f"; this run sets {', '.join(lines[:limit])}{more}"


def _finished(ckpt: dict[str, Any], ckpt_path: str, cfg: DictConfig, module: pl.LightningModule) -> bool:
    """Lightning would train one more batch on every restart of a finished run: say it is done."""
    images = int((ckpt.get("t2f") or {}).get("images_seen", 0))
    if images < module.total_kimg * 1000:
        return False
    rank_zero_print(f"Nothing to train: this run is finished ({images / 1000:g} of {module.total_kimg:g} kimg in "
                    f"{ckpt_path}); raise model.total_kimg (or model.schedule.kimg) to train further. "
                    f"Run directory: {cfg.paths.output_dir}")
    return True
