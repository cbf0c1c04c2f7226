"""``train(cfg)``: everything a run does, as one pure function of the composed config.

It builds the datamodule, the module, callbacks, loggers and the Trainer from the config
with ``hydra.utils.instantiate``, fits, and returns the final metrics (for sweepers).
"""

from __future__ import annotations

import os
import sys

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from t2f.utils import ConfigError, print_config, rank_zero_print


def train(cfg: DictConfig, extra_callbacks: list[pl.Callback] | None = None) -> dict[str, float]:
    """Fit one model; returns the final logged metrics as floats.

    ``extra_callbacks`` join the configured ones (for programmatic use and tests).
    """
    os.environ.setdefault("WANDB_MODE", "offline")  # never block on a login prompt
    os.environ.setdefault("WANDB_SILENT", "true")
    ckpt_path = _checked_ckpt_path(cfg.get("ckpt_path"))
    _relaunch_ddp_as_single_job()

    pl.seed_everything(cfg.seed, workers=True)  # identical initial weights on every rank
    datamodule = instantiate(cfg.dataset)
    datamodule.setup("fit")
    # text-conditional models are sized by the vocabulary (StyleGAN only with model.conditional=true)
    if "vocab_size" in cfg.model.keys() and cfg.model.get("conditional", True):
        if datamodule.vocab is None:
            raise ConfigError(
                f"model={_choice('model')} is text-conditional but dataset={_choice('dataset')} "
                "has no captions: choose a captioned dataset (synthetic, celeba, face2text)"
            )
        cfg.model.vocab_size = len(datamodule.vocab)  # recorded in the saved config
    schedule = cfg.model.get("schedule")
    if schedule is not None and "images_per_epoch" in schedule.keys():
        schedule.images_per_epoch = len(datamodule.train_set)  # for epochs_per_stage
    module = instantiate(cfg.model)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if cfg.get("metrics"):  # evaluation metrics (conf/metrics): a callback, never in checkpoints
        callbacks.append(instantiate(cfg.metrics))
    callbacks += list(extra_callbacks or [])
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    _share_cpu_threads(trainer)

    output_dir = cfg.paths.output_dir
    if trainer.is_global_zero:
        if cfg.get("print_config"):
            print_config(cfg)
        rank_zero_print(f"Run directory: {output_dir}")
        os.makedirs(output_dir, exist_ok=True)
        OmegaConf.save(module.run_config, os.path.join(output_dir, "config.yaml"))
        for logger in trainer.loggers:
            logger.log_hyperparams(module.run_config)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    finally:
        _finish_wandb()
    rank_zero_print(
        f"Finished at {module.kimg:.1f} kimg ({trainer.global_step} optimizer steps). "
        f"Run directory: {output_dir}"
    )
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def _share_cpu_threads(trainer: pl.Trainer) -> None:
    """CPU processes of one node split the cores: oversubscribed threads run many times slower."""
    if trainer.strategy.root_device.type == "cpu" and trainer.num_devices > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // trainer.num_devices))


def _checked_ckpt_path(path: str | None) -> str | None:
    if path is None:
        return None
    if not os.path.isfile(path):
        raise ConfigError(
            f"ckpt_path={path} does not exist: pass a checkpoint file such as "
            "<run directory>/checkpoints/last.ckpt"
        )
    return os.path.abspath(path)


def _choice(group: str) -> str:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get(group))
    return "?"


def _relaunch_ddp_as_single_job() -> None:
    """Make Lightning's DDP workers rerun *this job*, not the whole sweep.

    Lightning starts ranks > 0 by re-running ``sys.argv`` with ``hydra.run.dir`` set to the
    Hydra run dir. Inside a multirun ``sys.argv`` holds ``-m`` and the sweep lists, so every
    worker would start a sweep of its own. We give it this job's overrides and directory.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with open_dict(hydra_cfg):
        OmegaConf.set_readonly(hydra_cfg, False)
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def _finish_wandb() -> None:
    """Close the W&B run so that each job of a sweep gets its own run."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
