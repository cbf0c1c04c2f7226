"""``train(cfg)``: everything a run does, as one pure function of the composed config.

From Python, ``t2f.train("model=stylegan", "dataset=celeba", ...)`` takes the same overrides as
the command line (see :func:`run`): this module is itself callable, so ``from t2f import train``
gives the same callable whether or not the module was imported before.

It builds the datamodule, the module, callbacks, loggers and the Trainer from the config
with ``hydra.utils.instantiate``, fits, and returns the final metrics (for sweepers).
A run directory that already holds ``checkpoints/last.ckpt`` resumes from it, which is how a
SLURM job requeued by the submitit launcher (same config, same directory) carries on; when
that file cannot be read, the newest readable ``snapshot-kimg*.ckpt`` is used instead.
A run stopped by Ctrl-C or SIGTERM says where it stopped and how to resume, and exits
non-zero (1 for Ctrl-C, 143 = 128 + SIGTERM).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import shlex
import signal
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from t2f.callbacks.checkpoint import snapshots
from t2f.loggers import use_kimg_axis, wandb_credentials, wandb_mode
from t2f.precision import explain_precision
from t2f.preflight import check_resume, check_trainer
from t2f.run_lock import run_directory_lock
from t2f.runs import wandb_run_folders
from t2f.utils import ConfigError, check_seed, print_config, rank_zero_print


def train(cfg: DictConfig, extra_callbacks: list[pl.Callback] | None = None) -> dict[str, float]:
    """Fit one model; returns the final logged metrics as floats.

    ``extra_callbacks`` join the configured ones (for programmatic use and tests). The run
    directory is locked meanwhile: a second run started there is refused (:mod:`t2f.run_lock`).
    """
    with run_directory_lock(cfg.paths.output_dir):
        return _train(cfg, extra_callbacks)


def _train(cfg: DictConfig, extra_callbacks: list[pl.Callback] | None) -> dict[str, float]:
    os.environ["WANDB_MODE"] = wandb_mode()  # online when logged in; never a login prompt
    os.environ.setdefault("WANDB_SILENT", "true")
    # Lightning 2.6 with recent torch warns once per run about its own use of torch's LeafSpec:
    # nothing a user can act on, and it reads like a problem with the run.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
    _check_optimized_metric_is_measured(cfg)
    check_seed(cfg.get("seed"))
    ckpt_path = _resume_path(cfg)
    _relaunch_ddp_as_single_job()
    _name_wandb_run(cfg, resuming=ckpt_path is not None and cfg.get("ckpt_path") is None)

    pl.seed_everything(cfg.seed, workers=True)  # identical initial weights on every rank
    datamodule = instantiate(cfg.dataset)
    datamodule.setup("fit")
    fill_from_data(cfg, datamodule)
    cfg.trainer.precision, why = explain_precision(cfg.trainer.precision, cfg.trainer.accelerator)  # saved resolved
    rank_zero_print(f"Precision: {cfg.trainer.precision} ({why})")
    module = instantiate(cfg.model)
    if ckpt_path is not None and check_resume(ckpt_path, cfg, module, datamodule):
        return {"kimg": module.total_kimg}  # finished: the length it was trained to
    module.run_config = OmegaConf.to_container(cfg, resolve=True)

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if cfg.get("metrics"):  # evaluation metrics (conf/metrics): a callback, never in checkpoints
        callbacks.append(instantiate(cfg.metrics))
    callbacks += list(extra_callbacks or [])
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      plugins=_trainer_plugins(cfg))
    check_trainer(trainer, cfg, module, len(datamodule.train_set))
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
        use_kimg_axis(trainer.loggers)
    ddp_env = {k: os.environ.get(k) for k in _DDP_ENV}
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, **_weights_only(trainer))
    except SystemExit as stop:  # Lightning's answer to Ctrl-C (exit 1) and SIGTERM (SIGTERMException)
        raise _interrupted(stop, module, cfg) from None
    except Exception:  # a sweep goes on after a failed job: keep its traceback in <job>/run.log
        if _multirun_config() is not None:
            logging.getLogger(__name__).exception("Training failed")
        raise
    finally:
        _finish_wandb()
        _release_ddp_workers(trainer, ddp_env)
    rank_zero_print(
        f"Finished at {module.kimg:.1f} kimg ({trainer.global_step} optimizer steps). "
        f"Run directory: {output_dir}"
    )
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    _check_optimized_metric(cfg, metrics)
    return metrics


# What Lightning's DDP launcher sets in its own process before starting the other ranks.
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def fill_from_data(cfg: DictConfig, datamodule: pl.LightningDataModule) -> None:
    """The model's values that only the data knows, recorded in the saved config: the vocabulary
    size of a text component (``model.text``) and the images per epoch of a schedule written in
    epochs. The one place for train and the benchmarks."""
    with open_dict(cfg):
        text = cfg.model.get("text")
        if text is not None:
            if datamodule.vocab is None:
                raise ConfigError(
                    f"model={_choice('model')} is text-conditional but dataset={_choice('dataset')} "
                    "has no captions: choose a captioned dataset (synthetic, celeba, face2text)"
                )
            text.vocab_size = len(datamodule.vocab)
        schedule = cfg.model.get("schedule")
        if schedule is not None and "images_per_epoch" in schedule.keys():
            schedule.images_per_epoch = len(datamodule.train_set)  # for schedule.epochs


def _release_ddp_workers(trainer: pl.Trainer, env: dict[str, str | None]) -> None:
    """After a DDP fit that started its own worker processes: wait for them, close the process
    group and restore the environment. Otherwise the next job of a sweep in this process finds
    LOCAL_RANK set and a dead process group, takes them for an external launch and hangs."""
    procs = getattr(trainer.strategy.launcher, "procs", None)
    if not procs:
        return
    for proc in procs:
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _share_cpu_threads(trainer: pl.Trainer) -> None:
    """CPU processes of one node split the cores: oversubscribed threads run many times slower."""
    if trainer.strategy.root_device.type == "cpu" and trainer.num_devices > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // trainer.num_devices))


def _resume_path(cfg: DictConfig) -> str | None:
    """``ckpt_path`` if set, else this run directory's own ``last.ckpt`` (auto-resume), or its
    newest readable snapshot when ``last.ckpt`` is missing or damaged.

    A SLURM job requeued after preemption or a time limit runs again with the same config in
    the same run directory (hydra-submitit-launcher resubmits the same job); so does a run
    restarted with the same ``hydra.run.dir``. Both must continue, not start over. Every
    checkpoint is read here first with ``weights_only=True``: an unreadable file is one clear
    line (or a fallback), never a traceback inside Lightning.
    """
    explicit = _checked_ckpt_path(cfg.get("ckpt_path"))
    if explicit is not None:
        return explicit
    ckpt_dir = OmegaConf.select(cfg, "callbacks.checkpoint.dirpath") or os.path.join(
        cfg.paths.output_dir, "checkpoints")
    last = os.path.join(ckpt_dir, "last.ckpt")
    candidates = snapshots(ckpt_dir)
    if os.path.isfile(last):
        problem = _unreadable(last)
        if problem is None:
            rank_zero_print(f"Resuming from {last}: this run directory already has a checkpoint "
                            "(a requeued or restarted job)")
            return os.path.abspath(last)
    elif not candidates:
        return None
    else:
        problem = "it does not exist"
    for snapshot in candidates:
        if _unreadable(snapshot) is None:
            rank_zero_print(f"Resuming from {snapshot}, the newest readable snapshot: {last} cannot be used "
                            f"({problem})")
            return os.path.abspath(snapshot)
    raise ConfigError(
        f"cannot resume this run directory: {last} cannot be used ({problem}) and no snapshot-kimg*.ckpt "
        f"in {ckpt_dir} is readable; move {ckpt_dir} away to start over, or pass ckpt_path=<a checkpoint>")


def _unreadable(path: str) -> str | None:
    """Why ``path`` cannot be resumed from (None: it can); reads it with ``weights_only=True``."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a zip, not weights-only: all mean "cannot resume"
        return f"it is damaged or not a checkpoint ({type(error).__name__}: {(str(error).splitlines() or [''])[0]})"
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        return "it holds no training state (state_dict): is it a checkpoint written by t2f training?"
    return None


def _checked_ckpt_path(path: str | None) -> str | None:
    if path is None:
        return None
    if not os.path.isfile(path):
        raise ConfigError(
            f"ckpt_path={path} does not exist: pass a checkpoint file such as "
            "<run directory>/checkpoints/last.ckpt"
        )
    problem = _unreadable(path)
    if problem is not None:
        raise ConfigError(f"ckpt_path={path} cannot be resumed from: {problem}")
    return os.path.abspath(path)


def _weights_only(trainer: pl.Trainer) -> dict[str, bool]:
    """``weights_only=True`` for the resume load where Lightning takes it (newer than 2.5.2): a
    checkpoint is data, never code. Older versions load a file this module already read with
    ``weights_only=True``, so it holds nothing else either."""
    return {"weights_only": True} if "weights_only" in inspect.signature(trainer.fit).parameters else {}


def _interrupted(stop: SystemExit, module: pl.LightningModule, cfg: DictConfig) -> SystemExit:
    """The exit for a run Lightning stopped on Ctrl-C or SIGTERM: one line saying where it stopped
    and how to resume, and a non-zero status (so a scheduler never takes it for success); any
    other SystemExit (e.g. submitit's after requeuing a SLURM job) passes through unchanged."""
    from pytorch_lightning.utilities import rank_zero_only
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    if isinstance(stop, SIGTERMException):
        cause, code = "SIGTERM", 128 + int(signal.SIGTERM)
    elif isinstance(stop.__context__, KeyboardInterrupt):
        cause, code = "Ctrl-C", stop.code if isinstance(stop.code, int) and stop.code else 1
    else:
        return stop
    last = os.path.join(OmegaConf.select(cfg, "callbacks.checkpoint.dirpath") or
                        os.path.join(cfg.paths.output_dir, "checkpoints"), "last.ckpt")
    saved = f"checkpoint: {last}" if os.path.isfile(last) else "no checkpoint was saved yet"
    if getattr(rank_zero_only, "rank", 0) == 0:
        print(f"Interrupted ({cause}) at {module.kimg:.3f} kimg ({saved}); resume with: {resume_command(cfg)}",
              file=sys.stderr, flush=True)
    return SystemExit(code)


def resume_command(cfg: DictConfig) -> str:
    """The command that continues this run in its own directory (auto-resume from last.ckpt)."""
    from hydra.core.hydra_config import HydraConfig

    program = "python run.py" if os.path.basename(sys.argv[0]) == "run.py" else "t2f-train"
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    overrides = [o for o in overrides if not o.startswith(("hydra.run.dir=", "hydra.sweep.dir="))]
    return " ".join([program, *map(shlex.quote, overrides), shlex.quote(f"hydra.run.dir={cfg.paths.output_dir}")])


def _choice(group: str) -> str:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get(group))
    return "?"


def _multirun_config() -> DictConfig | None:
    """Hydra's config when this run is one job of a multirun (sweep), else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return HydraConfig.get()
    return None


def _relaunch_ddp_as_single_job() -> None:
    """Make Lightning's DDP workers rerun *this job*, not the whole sweep.

    Lightning starts ranks > 0 by re-running ``sys.argv`` with ``hydra.run.dir`` set to the
    Hydra run dir. Inside a multirun ``sys.argv`` holds ``-m`` and the sweep lists, so every
    worker would start a sweep of its own. We give it this job's overrides and directory.
    """
    hydra_cfg = _multirun_config()
    if hydra_cfg is None:
        return
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with open_dict(hydra_cfg):
        OmegaConf.set_readonly(hydra_cfg, False)
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def _trainer_plugins(cfg: DictConfig) -> list:
    """``trainer.plugins`` from the config, plus t2f's own where the user gave none of that kind:
    atomic checkpoint files (a kill during a save never truncates last.ckpt) and, under
    submitit on SLURM, the cluster environment without Lightning's auto-requeue."""
    from pytorch_lightning.plugins import CheckpointIO, ClusterEnvironment

    from t2f.checkpoint_io import AtomicCheckpointIO

    given = cfg.trainer.get("plugins")
    if given is None:
        plugins = []
    elif isinstance(given, str):
        plugins = [given]
    else:
        made = instantiate(given)
        plugins = list(made) if OmegaConf.is_list(made) or isinstance(made, (list, tuple)) else [made]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    if not any(isinstance(p, ClusterEnvironment) for p in plugins):
        plugins += _slurm_environment()
    return plugins


def _slurm_environment() -> list:
    """Under a SLURM job of the submitit launcher, submitit alone requeues on preemption or
    timeout (its signal handler resubmits the job, which then resumes from last.ckpt), so
    Lightning's own SLURM auto-requeue is switched off: one job, one requeue."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return []
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def _name_wandb_run(cfg: DictConfig, resuming: bool) -> None:
    """Group W&B runs by sweep (multirun) or experiment; tag them with model, dataset, sweep.

    A resumed run (auto-resume in its own directory) continues its earlier W&B run id.
    """
    wandb_cfg = OmegaConf.select(cfg, "logger.wandb")
    if not wandb_cfg or "WandbLogger" not in str(wandb_cfg.get("_target_")):
        return
    mode = os.environ.get("WANDB_MODE", "offline")
    rank_zero_print(f"W&B: {mode}" + ("" if mode != "offline" or wandb_credentials() else
                    " (no W&B login found: `wandb login` or WANDB_API_KEY puts runs online; "
                    "`wandb sync <run>/wandb/offline-run-*` uploads this one later)"))
    choices = {g: _choice(g) for g in ("model", "dataset", "experiment", "hydra/sweeper", "hparams_search")}
    choices = {g: c for g, c in choices.items() if c not in ("?", "None")}
    experiment = choices.get("experiment")
    tags = [*(wandb_cfg.get("tags") or []), choices.get("model"), choices.get("dataset"), experiment]
    group = experiment
    sweep = _multirun_config()
    if sweep is not None:
        group = sweep.sweep.dir
        tags += ["sweep", choices.get("hydra/sweeper"), choices.get("hparams_search")]
    with open_dict(wandb_cfg):
        wandb_cfg.group = wandb_cfg.get("group") or group
        wandb_cfg.tags = list(dict.fromkeys(str(t) for t in tags if t))  # unique, in order
        previous = _previous_wandb_id(cfg.paths.output_dir) if resuming else None
        if previous and not wandb_cfg.get("id"):
            wandb_cfg.id, wandb_cfg.resume = previous, "allow"


def _previous_wandb_id(output_dir: str) -> str | None:
    """The id of the latest W&B run in a run directory."""
    runs = wandb_run_folders(output_dir)
    return runs[-1][1] if runs else None


def _check_optimized_metric_is_measured(cfg: DictConfig) -> None:
    name = cfg.get("optimized_metric")
    if name and str(name).startswith("metrics/") and not cfg.get("metrics"):
        raise ConfigError(
            f"optimized_metric={name} is never measured with metrics=none: add e.g. "
            f"metrics={str(name).split('/')[1]}"
        )


def _check_optimized_metric(cfg: DictConfig, metrics: dict[str, float]) -> None:
    """A sweeper must never rank a run by a missing or NaN value: such a run fails instead,
    which the Optuna sweeper records as a failed trial before it goes on."""
    name = cfg.get("optimized_metric")
    if not name:
        return
    if name not in metrics:
        raise ConfigError(f"optimized_metric={name} was never logged; logged: {sorted(metrics)}")
    if not math.isfinite(metrics[name]):
        raise FloatingPointError(f"optimized_metric={name} is {metrics[name]}: the run diverged")


def _finish_wandb() -> None:
    """Close the W&B run so that each job of a sweep gets its own run."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def compose_run_config(overrides: list[str] | tuple[str, ...], output_dir: str | os.PathLike | None = None
                       ) -> DictConfig:
    """The config ``python run.py OVERRIDES`` would run with, outside a Hydra command: composed
    from the package's configs, writing to ``output_dir`` (default: the config's
    ``hydra.run.dir``, ``outputs/DATE/TIME``), and registered as Hydra's current run."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from t2f.conf import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(Path(output_dir or cfg.hydra.run.dir).absolute())
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    os.makedirs(cfg.hydra.runtime.output_dir, exist_ok=True)
    return cfg


def run(*overrides: str, output_dir: str | os.PathLike | None = None,
        callbacks: list[pl.Callback] | None = None) -> dict[str, float]:
    """Train from Python with command-line overrides, e.g. ``run("model=dcgan", "model.total_kimg=10")``;
    returns the final metrics. The run writes to ``output_dir`` (default: the config's
    ``hydra.run.dir``, ``outputs/DATE/TIME``), where it resumes if a checkpoint is there."""
    return train(compose_run_config(overrides, output_dir), callbacks)


class _CallableModule(types.ModuleType):
    """``t2f.train(...)`` is :func:`run`: the package attribute ``t2f.train`` is this module once
    anything imported it, so the module itself is what ``from t2f import train`` must call."""

    def __call__(self, *overrides: str, output_dir: str | os.PathLike | None = None,
                 callbacks: list[pl.Callback] | None = None) -> dict[str, float]:
        return run(*overrides, output_dir=output_dir, callbacks=callbacks)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":  # python -m t2f.train: the same command as t2f-train and run.py
    from t2f.cli import train_main

    train_main()
