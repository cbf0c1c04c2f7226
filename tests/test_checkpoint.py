"""Checkpoints: atomic files, stale temporaries, the kimg schedule, best.ckpt across resume, crashes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from t2f import checkpoint_io
from t2f.callbacks.checkpoint import KimgCheckpoint, snapshot_name
from t2f.callbacks.metrics import MetricsCallback
from t2f.checkpoint_io import AtomicCheckpointIO, remove_stale_temporaries, temporary_path
from t2f.train import _trainer_plugins, train
from tests.conftest import REPO, compose_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: one thread is faster


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


# -- the atomic writer ----------------------------------------------------------------------

def test_plugin_saves_and_loads_and_leaves_no_temporary_file(tmp_path) -> None:
    plugin = AtomicCheckpointIO()
    path = tmp_path / "sub" / "last.ckpt"  # the directory is created
    plugin.save_checkpoint({"w": torch.arange(5)}, path)
    plugin.save_checkpoint({"w": torch.arange(6)}, path)  # replaces
    assert torch.equal(plugin.load_checkpoint(path)["w"], torch.arange(6))
    assert _leftovers(path.parent) == []
    with pytest.raises(TypeError, match="storage_options"):
        plugin.save_checkpoint({}, path, storage_options={"x": 1})


@pytest.mark.parametrize("error", [OSError("No space left on device"), KeyboardInterrupt()])
def test_a_save_that_fails_halfway_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch,
                                                                                error) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    before = path.read_bytes()
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise error

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(type(error)):
        AtomicCheckpointIO().save_checkpoint({"step": 2, "w": torch.randn(1000)}, path)
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert _leftovers(tmp_path) == []


def test_only_temporary_files_of_the_writer_count_as_stale(tmp_path) -> None:
    stale = Path(temporary_path(str(tmp_path / "last.ckpt")))
    stale.write_bytes(b"half a checkpoint")
    keep = ["last.ckpt", "best.ckpt", "notes.tmp", ".hidden", "last.ckpt.tmp-1-ab", ".x.tmp-12-zz"]
    for name in keep:
        (tmp_path / name).write_bytes(b"")
    assert remove_stale_temporaries(tmp_path) == [str(stale)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert remove_stale_temporaries(tmp_path / "missing") == []


@pytest.mark.slow
def test_a_process_killed_during_a_save_leaves_the_old_checkpoint_loadable(tmp_path) -> None:
    """SIGKILL in the middle of writing (a SLURM time limit, the OOM killer): no cleanup runs."""
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    script = textwrap.dedent(f"""
        import io, sys, time, torch
        from t2f.checkpoint_io import AtomicCheckpointIO
        real_save = torch.save
        def slow(obj, f):
            buffer = io.BytesIO(); real_save(obj, buffer)
            f.write(buffer.getvalue()[:100000]); f.flush()
            print("half", flush=True); time.sleep(120)
        torch.save = slow
        AtomicCheckpointIO().save_checkpoint({{"step": 2, "w": torch.randn(100000)}}, {str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "half"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert torch.load(path, weights_only=True) == {"step": 1}
    left = _leftovers(tmp_path)
    assert len(left) == 1 and left[0].startswith(".last.ckpt.tmp-")
    assert remove_stale_temporaries(tmp_path) == [str(tmp_path / left[0])]


# -- the callback without a Trainer ---------------------------------------------------------

class _FakeTrainer(SimpleNamespace):
    """What KimgCheckpoint reads from a Trainer; records saves as (file, step)."""

    def __init__(self, **kwargs) -> None:
        defaults = dict(global_step=0, world_size=1, callback_metrics={}, saved=[],
                        strategy=SimpleNamespace(reduce_boolean_decision=lambda d, all=True: d))
        super().__init__(**{**defaults, **kwargs})

    def save_checkpoint(self, path: str, weights_only: bool | None = None) -> None:
        assert weights_only is False  # every file holds the whole state, to resume from
        self.saved.append((os.path.basename(path), self.global_step))


@pytest.mark.parametrize("mode, best_at, best", [("min", [1, 2, 5], 2.0), ("max", [1, 3], 7.0)])
def test_best_follows_the_monitored_value_in_either_direction(tmp_path, mode, best_at, best) -> None:
    callback, trainer = KimgCheckpoint(str(tmp_path), monitor="m", mode=mode), _FakeTrainer()
    values = {"min": [5, 3, 4, float("nan"), 2], "max": [5, 3, 7, float("nan"), 6]}[mode]
    for step, value in enumerate(values, 1):
        trainer.global_step, trainer.callback_metrics = step, {"m": torch.tensor(value)}
        callback.save_now(trainer)
    assert [step for name, step in trainer.saved if name == "best.ckpt"] == best_at  # NaN never improves
    assert [step for name, step in trainer.saved if name == "last.ckpt"] == [1, 2, 3, 4, 5]
    assert callback.best_model_score == best


def test_without_the_monitored_value_only_last_is_saved(tmp_path) -> None:
    callback, trainer = KimgCheckpoint(str(tmp_path), monitor="metrics/swd"), _FakeTrainer(global_step=2)
    callback.save_now(trainer)
    assert trainer.saved == [("last.ckpt", 2)] and callback.best_model_score is None


def test_an_exception_saves_last_unless_one_ddp_rank_exits_alone(tmp_path) -> None:
    callback = KimgCheckpoint(str(tmp_path))
    trainer = _FakeTrainer(global_step=6, world_size=2)
    callback.on_exception(trainer, None, SystemExit(0))  # submitit exits rank 0 only: no collective save
    assert trainer.saved == []
    callback.on_exception(trainer, None, KeyboardInterrupt())  # every rank gets Ctrl-C / SIGTERM
    assert trainer.saved == [("last.ckpt", 6)]
    callback.on_exception(trainer, None, RuntimeError("crash"))  # already saved at this step
    assert len(trainer.saved) == 1
    single = _FakeTrainer(global_step=4)
    KimgCheckpoint(str(tmp_path)).on_exception(single, None, SystemExit(1))
    assert single.saved == [("last.ckpt", 4)]


def test_best_score_survives_resume_in_the_same_directory_only(tmp_path) -> None:
    callback = KimgCheckpoint(str(tmp_path / "ckpt"), monitor="metrics/swd")
    callback.best_model_score = 1.5
    state = callback.state_dict()
    same = KimgCheckpoint(str(tmp_path / "ckpt"), monitor="metrics/swd")
    same.load_state_dict(state)
    assert same.best_model_score == 1.5
    moved = KimgCheckpoint(str(tmp_path / "other"), monitor="metrics/swd")
    moved.load_state_dict(state)
    assert moved.best_model_score is None  # its directory has no best.ckpt yet
    # checkpoints written while KimgCheckpoint was a ModelCheckpoint: longer key, tensor score
    legacy_key = ("KimgCheckpoint{'monitor': 'metrics/swd', 'mode': 'min', 'every_n_train_steps': 0, "
                  "'every_n_epochs': 1, 'train_time_interval': None}")
    old = KimgCheckpoint(str(tmp_path / "ckpt"), monitor="metrics/swd")
    old.on_load_checkpoint(None, None, {"callbacks": {legacy_key: {**state, "best_model_score": torch.tensor(0.7)}}})
    assert old.best_model_score == pytest.approx(0.7)


# -- in real training -----------------------------------------------------------------------

class _ScriptedMetric(pl.Callback):
    """Logs ``fake/score`` after every batch from a script and asks checkpoints to save now,
    the contract MetricsCallback follows after measuring."""

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        value = self.values.pop(0)
        pl_module.log("fake/score", value, on_step=True, on_epoch=False, logger=False)
        MetricsCallback._save_best(trainer, {"fake/score": value})


class _Spy(pl.Callback):
    """Records which file each checkpoint save wrote, with the images seen it holds."""

    def __init__(self, monkeypatch) -> None:
        self.saves: list[tuple[str, int]] = []
        real = checkpoint_io.atomic_torch_save

        def spy(obj, path):
            self.saves.append((os.path.basename(path), obj["t2f"]["images_seen"]))
            real(obj, path)

        monkeypatch.setattr(checkpoint_io, "atomic_torch_save", spy)

    def on_train_start(self, trainer, pl_module) -> None:
        assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_last_on_the_kimg_schedule_and_at_the_end_stale_temporaries_cleaned(tmp_path, monkeypatch) -> None:
    cfg = compose_config(tmp_path, ["callbacks.checkpoint.every_kimg=0.016"])  # 5 batches of 8
    ckpt_dir = Path(cfg.callbacks.checkpoint.dirpath)
    ckpt_dir.mkdir(parents=True)
    stale = Path(temporary_path(str(ckpt_dir / "last.ckpt")))
    stale.write_bytes(b"left by a killed save")
    spy = _Spy(monkeypatch)
    train(cfg, extra_callbacks=[spy])
    assert spy.saves == [("last.ckpt", 16), ("last.ckpt", 32), ("last.ckpt", 40)]
    snapshots = [snapshot_name(images) for images in (16, 32, 40)]  # the periodic saves and the last one
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt", *snapshots]  # no best, no temporaries


def test_best_follows_the_metric_and_its_score_survives_resume(tmp_path, monkeypatch) -> None:
    monitor = ["callbacks.checkpoint.monitor=fake/score", "callbacks.checkpoint.every_kimg=100"]
    spy = _Spy(monkeypatch)
    train(compose_config(tmp_path, monitor), extra_callbacks=[spy, _ScriptedMetric([5, 3, 4, 2, 6])])
    ckpt_dir = tmp_path / "run" / "checkpoints"
    best = torch.load(ckpt_dir / "best.ckpt", weights_only=True)
    assert best["t2f"]["images_seen"] == 32  # the batch that scored 2
    state = next(v for k, v in best["callbacks"].items() if k.startswith("KimgCheckpoint"))
    assert state["best_model_score"] == 2
    assert [s for s in spy.saves if s[0] == "best.ckpt"] == [("best.ckpt", 8), ("best.ckpt", 16),
                                                               ("best.ckpt", 32)]

    # The same run directory resumes from its last.ckpt: 2.5 is no improvement over 2, 1 is.
    spy = _Spy(monkeypatch)
    resumed = compose_config(tmp_path, [*monitor, "model.total_kimg=0.064"])
    train(resumed, extra_callbacks=[spy, _ScriptedMetric([2.5, 1, 2.5])])
    assert [s for s in spy.saves if s[0] == "best.ckpt"] == [("best.ckpt", 56)]
    best = torch.load(ckpt_dir / "best.ckpt", weights_only=True)
    assert best["t2f"]["images_seen"] == 56
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["t2f"]["images_seen"] == 64


def test_a_crash_leaves_a_resumable_last_ckpt_at_the_step_it_reached(tmp_path) -> None:
    class Crash(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            if pl_module.images_seen == 24:
                raise RuntimeError("simulated crash")

    cfg = compose_config(tmp_path, ["callbacks.checkpoint.every_kimg=100"])
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, extra_callbacks=[Crash()])
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["t2f"]["images_seen"] == 24 and last["global_step"] == 6


# -- Trainer plugins ------------------------------------------------------------------------

def test_plugins_merge_with_the_users_and_the_slurm_environment(monkeypatch) -> None:
    from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
    from pytorch_lightning.plugins.io import TorchCheckpointIO

    def cfg(plugins):
        return OmegaConf.create({"trainer": {"plugins": plugins}})

    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert [type(p) for p in _trainer_plugins(cfg(None))] == [AtomicCheckpointIO]
    env = {"_target_": "lightning_fabric.plugins.environments.LightningEnvironment"}
    assert [type(p) for p in _trainer_plugins(cfg([env]))] == [LightningEnvironment, AtomicCheckpointIO]
    assert [type(p) for p in _trainer_plugins(cfg(env))] == [LightningEnvironment, AtomicCheckpointIO]
    own_io = {"_target_": "pytorch_lightning.plugins.io.TorchCheckpointIO"}
    assert [type(p) for p in _trainer_plugins(cfg([own_io]))] == [TorchCheckpointIO]  # the user's choice

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setattr(SLURMEnvironment, "detect", staticmethod(lambda: True))
    plugins = _trainer_plugins(cfg(None))
    assert [type(p) for p in plugins] == [AtomicCheckpointIO, SLURMEnvironment]
    assert plugins[1].auto_requeue is False
    assert [type(p) for p in _trainer_plugins(cfg([env]))] == [LightningEnvironment, AtomicCheckpointIO]


def test_lightning_adds_no_checkpoint_callback_of_its_own(tmp_path) -> None:
    callback = KimgCheckpoint(str(tmp_path))
    trainer = pl.Trainer(callbacks=[callback], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, plugins=[AtomicCheckpointIO()])
    assert trainer.checkpoint_callbacks == [callback] and trainer.checkpoint_callback is callback
    assert trainer.callbacks[-1] is callback  # runs after the others: their state goes in


@pytest.mark.slow
def test_ddp_best_and_last_are_collective_saves_with_every_ranks_state(tmp_path, monkeypatch) -> None:
    """Two gloo ranks agree on every save (no deadlock), and each file holds both ranks' RNG state."""
    import csv

    from tests.helpers import METRICS_FAST, cli_tiny, run_cli

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "ddp"
    args = ["trainer=ddp_cpu", "trainer.max_steps=6", *cli_tiny(tmp_path), f"hydra.run.dir={run}",
            "metrics=swd", *METRICS_FAST, "metrics.swd.dirs_per_repeat=32", "+logger.csv.flush_logs_every_n_steps=1",
            "callbacks.checkpoint.monitor=metrics/swd", "callbacks.checkpoint.every_kimg=0.032",
            "callbacks.checkpoint.keep=0"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    swd = [float(r["metrics/swd"]) for r in csv.DictReader(open(run / "csv" / "metrics.csv"))
           if r.get("metrics/swd")]
    assert len(swd) == 3  # after each of the 3 batches (16 images a batch over both ranks)
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    state = next(v for k, v in best["callbacks"].items() if k.startswith("KimgCheckpoint"))
    assert state["best_model_score"] == pytest.approx(min(swd), rel=1e-5)
    assert best["t2f"]["images_seen"] == 16 * (swd.index(min(swd)) + 1)
    assert len(best["callbacks"]["RankSeed"]["rank_states"]) == 2
