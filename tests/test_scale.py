"""Scaling out: 2-process DDP per model, DDP inside a multirun, Optuna sweeps, the SLURM
launcher's config and resuming a requeued job from its own last.ckpt."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from t2f.runs import read_csv_history, wandb_run_folders
from t2f.train import train
from tests.conftest import TINY, TINY_MODEL, compose_config
from tests.helpers import checkpoint_growth, finite_losses, run_cli, wandb_log_records

# A few patches and directions: SWD in well under a second on 32 px tiny runs.
TINY_SWD = ["metrics=swd", "metrics.num_samples=16", "metrics.num_real=32", "metrics.batch_size=8",
            "metrics.swd.dirs_per_repeat=32", "metrics.every_kimg=100"]


class RankProbe(pl.Callback):
    """Test-only: every rank writes what it ended with, to compare ranks from outside."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("metrics/")}
        record = {"metrics": metrics, "images_seen": pl_module.images_seen, "world_size": trainer.world_size}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _cli(model: str, tmp_path: Path, logger: str = "csv") -> list[str]:
    tiny = [a for a in TINY if not a.startswith("logger=")]
    return [f"model={model}", *tiny, *TINY_MODEL[model], f"logger={logger}",
            f"paths.cache_dir={tmp_path.parent / 't2f-cache'}"]


def _wandb_run_record(run_dir: Path):
    """The run record (group, tags) of the one offline W&B run in a run directory."""
    from wandb.proto import wandb_internal_pb2 as pb

    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    for raw in wandb_log_records(next(runs[0].glob("*.wandb")).read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "run":
            return record.run
    raise AssertionError("no run record")


@pytest.mark.slow
def test_dcgan_ddp_cpu_rank0_writes_one_wandb_run_and_ranks_agree_on_metrics(tmp_path):
    run, probe = tmp_path / "ddp", tmp_path / "probe"
    args = [*_cli("dcgan", tmp_path, logger="[csv,wandb]"), "trainer=ddp_cpu", "trainer.max_steps=6",
            "trainer.log_every_n_steps=1", *TINY_SWD, "+logger.csv.flush_logs_every_n_steps=1",
            "+callbacks.probe._target_=tests.test_scale.RankProbe", f"+callbacks.probe.out={probe}",
            f"hydra.run.dir={run}"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    finite_losses(run)
    assert result.stdout.count(f"Run directory: {run}") == 2  # at start and end, by rank 0 only
    # rank 0 alone copies the final save as a snapshot
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt", "snapshot-kimg000000.048.ckpt"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["t2f"]["images_seen"] == 48
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2 and ranks[0]["images_seen"] == ranks[1]["images_seen"] == 48
    assert ranks[0]["metrics"]["metrics/swd"] > 0
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # evaluated on both ranks, synced
    record = _wandb_run_record(run)  # exactly one W&B run for the job
    assert {"dcgan", "synthetic"} <= set(record.tags) and record.run_group == ""


@pytest.mark.slow
def test_stylegan_ddp_cpu_grows_across_stage_switches(tmp_path):
    run = tmp_path / "ddp"
    args = [*_cli("stylegan", tmp_path), "trainer=ddp_cpu", "trainer.log_every_n_steps=1",
            "+logger.csv.flush_logs_every_n_steps=1", f"hydra.run.dir={run}"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint_growth(ckpt).stage == 3 and ckpt["t2f"]["images_seen"] >= 80  # 4 -> 32 px, 16 per batch
    states = ckpt["callbacks"]["RankSeed"]["rank_states"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])
    finite_losses(run)
    resolutions = {row["res"] for row in read_csv_history(run / "csv" / "metrics.csv") if "res" in row}
    assert resolutions >= {8.0, 16.0, 32.0}  # logged after each batch: 4 px is over after one


@pytest.mark.slow
def test_ddp_inside_a_multirun_runs_each_job_once_in_its_own_directory(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=1,2", "trainer=ddp_cpu", "trainer.max_steps=2", *_cli("dcgan", tmp_path, "wandb"),
            f"hydra.sweep.dir={sweep}"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Launching 2 jobs locally") == 1  # no worker started a sweep of its own
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()
    for job, seed in (("0", 1), ("1", 2)):
        ckpt = torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)
        assert ckpt["global_step"] == 2 and ckpt["t2f"]["images_seen"] == 16  # 1 batch x 2 ranks
        assert OmegaConf.load(sweep / job / "config.yaml").seed == seed
        record = _wandb_run_record(sweep / job)  # one W&B run per job, grouped by the sweep
        assert record.run_group == str(sweep) and {"sweep", "basic", "dcgan"} <= set(record.tags)


@pytest.mark.slow
def test_optuna_sweep_minimises_swd_and_records_a_failed_trial(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    # One searched parameter; an lr of -1 is refused when the module is built. Seed 9 draws 0.001, -1, 0.002.
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=9",
            "model.optimizer_g.lr=0.002", "model.loss.gp_weight=10", "model.d_steps_per_g=1",
            "model.optimizer_d.lr=choice(0.002,0.001,-1.0)", *_cli("t2f", tmp_path), *TINY_SWD,
            f"hydra.sweep.dir={sweep}"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Failed experiment" in output and "model.optimizer_d.lr=-1.0 must be positive" in output
    swd = {}
    failed = 0
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        if not (job / "config.yaml").exists():  # refused while the module was built, before training
            failed += 1
            continue
        lr = OmegaConf.load(job / "config.yaml").model.optimizer_d.lr
        values = [r["metrics/swd"] for r in read_csv_history(job / "csv" / "metrics.csv") if "metrics/swd" in r]
        swd[lr] = values[-1]
    assert failed == 1 and sorted(swd) == [0.001, 0.002] and all(math.isfinite(v) for v in swd.values())
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(swd.values()))
    assert best.best_params["model.optimizer_d.lr"] == min(swd, key=swd.get)


def test_a_nan_or_missing_optimized_metric_fails_the_run(tmp_path):
    from t2f.train import _check_optimized_metric
    from t2f.utils import ConfigError

    cfg = compose_config(tmp_path, ["optimized_metric=metrics/swd"])
    with pytest.raises(FloatingPointError, match="metrics/swd is nan"):
        _check_optimized_metric(cfg, {"metrics/swd": float("nan")})
    with pytest.raises(ConfigError, match="never logged"):
        _check_optimized_metric(cfg, {"loss/d": 1.0})
    _check_optimized_metric(cfg, {"metrics/swd": 3.0})
    with pytest.raises(ConfigError, match="add e.g. metrics=swd"):
        train(cfg)  # metrics=none: refused before any training


def test_slurm_launcher_ties_nodes_and_tasks_to_the_trainer(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import submitit
    from hydra.utils import instantiate

    cfg = compose_config(tmp_path, ["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2",
                                    "trainer.devices=4", "hydra.launcher.partition=gpu",
                                    f"hydra.sweep.dir={tmp_path / 'sweep'}"], tiny=False)
    launcher = instantiate(cfg.hydra.launcher)
    assert launcher.params["nodes"] == 2 and launcher.params["tasks_per_node"] == 4
    assert launcher.params["gpus_per_node"] == 4 and launcher.params["max_num_timeout"] > 0

    # Submit through the real launcher code, catching the executor instead of calling sbatch.
    submitted = {}

    def map_array(executor, fn, *args):
        submitted["executor"] = executor
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: 1))  # "srun found"
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    assert launcher.launch([["seed=1"]], initial_job_idx=0) == []
    script = submitted["executor"]._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu",
                 "--signal=USR2@120", "--time=1440"):
        assert f"#SBATCH {line}" in script, line
    assert hasattr(launcher, "checkpoint")  # submitit requeues the same job (same run directory)


def test_rerun_in_its_own_directory_resumes_from_last_ckpt_and_wandb_run(tmp_path):
    first = compose_config(tmp_path, ["trainer.max_steps=4", "logger=wandb"])
    train(first)  # 2 batches of 8: stopped as if preempted
    run = Path(first.paths.output_dir)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["t2f"]["images_seen"] == 16

    seen = {}

    class Probe(pl.Callback):
        def on_train_start(self, trainer, module):
            seen["images"] = module.images_seen

    again = compose_config(tmp_path, ["logger=wandb"])  # same directory, ckpt_path=null
    train(again, extra_callbacks=[Probe()])
    assert seen["images"] == 16  # continued, not restarted
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["t2f"]["images_seen"] == 40
    assert len({run_id for _, run_id, _ in wandb_run_folders(run)}) == 1  # the W&B run continues under its id


def test_wandb_run_folders_parse_with_the_same_second_suffix(tmp_path):
    for name in ("offline-run-20261124_042951-fwzp4u4h", "offline-run-20261124_042951-fwzp4u4h-1",
                 "run-20261124_050000-abc123", "latest-run", "debug.log"):
        (tmp_path / "wandb" / name).mkdir(parents=True)
    assert [folder.name for _, _, folder in wandb_run_folders(tmp_path)] == [
        "offline-run-20261124_042951-fwzp4u4h", "offline-run-20261124_042951-fwzp4u4h-1", "run-20261124_050000-abc123"]
    assert [(time, run_id) for time, run_id, _ in wandb_run_folders(tmp_path)] == [
        ("20261124_042951", "fwzp4u4h"), ("20261124_042951", "fwzp4u4h"), ("20261124_050000", "abc123")]
