"""Issue 17: untrusted checkpoints build nothing foreign, captions stay literal, divergence stops
the run without touching good checkpoints, snapshots and the fallback past a damaged last.ckpt,
logs kept across resume, and interrupted runs (Ctrl-C, SIGTERM) exit non-zero saying so."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from t2f.callbacks.checkpoint import KimgCheckpoint, snapshot_name, snapshots
from t2f.callbacks.divergence import DivergenceGuard, TrainingDiverged
from t2f.checkpoints import load_checkpoint
from t2f.cli import run_errors
from t2f.conf import CONFIG_DIR
from t2f.export import export
from t2f.generate import free_text, generate
from t2f.train import _resume_path, train
from t2f.trusted import allowed_target, shipped_targets
from t2f.utils import ConfigError
from tests.conftest import REPO, TINY, TINY_MODEL, compose_config
from tests.test_generate import config as generate_config

pytestmark = pytest.mark.usefixtures("one_thread")


# -- 1. a checkpoint builds only allowed classes ----------------------------------------------

def test_every_shipped_target_is_allowed_and_foreign_ones_are_not() -> None:
    written = set()
    for path in CONFIG_DIR.rglob("*.yaml"):
        written |= {line.split(":", 1)[1].split("#")[0].strip() for line in path.read_text().splitlines()
                    if line.strip().startswith("_target_:")}
    assert written and written == set(shipped_targets())
    assert all(allowed_target(t) for t in written)
    assert allowed_target("torch.optim.AdamW") and allowed_target("torch.optim.rmsprop.RMSprop")
    assert allowed_target("t2f.modules.base.GANModule")  # t2f's own modules, even without a config
    for foreign in ["pathlib.Path.write_text", "builtins.open", "torch.load", "numpy.savetxt", "os.system",
                    "t2f.modules.dcgan.torch.load", "t2f.modules.base.copy", "t2f.data.base.LimitedSet",
                    "t2f.nets.dcgan.DCGANGenerator", "subprocess.run", None, 3]:
        assert not allowed_target(foreign), foreign


def _evil_checkpoint(tmp_path: Path, victim: Path, where: str) -> Path:
    """A file that passes weights_only=True and asks Hydra to write ``victim``."""
    write = {"_target_": "pathlib.Path.write_text", "_partial_": False,
             "self": {"_target_": "pathlib.Path", "_args_": [str(victim)]}, "data": "pwned"}
    model = {"_target_": "t2f.modules.dcgan.DCGANModule", "resolution": 32,
             "optimizer_g": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001}}
    dataset = {"_target_": "t2f.data.synthetic.SyntheticDataModule", "size": 8}
    if where == "model":  # nested in a list of a plain dict
        model["loss"] = {"name": "hinge", "hooks": [1, write]}
    elif where == "partial":  # an optimizer factory
        model["optimizer_d"] = {**write, "_partial_": True}
    elif where == "interpolation":  # a _target_ that only exists once OmegaConf resolves the string
        model["loss"] = ("${oc.decode:'{_target_: pathlib.Path.write_text, self: {_target_: pathlib.Path, "
                         f"_args_: [{victim}]}}, data: pwned}}'}}")
    else:
        dataset["transforms"] = write
    path = tmp_path / f"evil_{where}.ckpt"
    torch.save({"state_dict": {}, "t2f": {"config": {"model": model, "dataset": dataset}}}, path)
    return path


@pytest.mark.parametrize("where, named", [("model", "model.loss.hooks[1]._target_='pathlib.Path.write_text'"),
                                          ("partial", "model.optimizer_d._target_='pathlib.Path.write_text'"),
                                          ("interpolation", "model.loss holds the interpolation"),
                                          ("dataset", "dataset.transforms._target_='pathlib.Path.write_text'")])
def test_a_checkpoint_naming_foreign_code_runs_nothing(tmp_path, where, named) -> None:
    victim = tmp_path / "victim.txt"
    evil = _evil_checkpoint(tmp_path, victim, where)
    tools = [lambda: load_checkpoint(evil)]  # evaluate
    if where != "dataset":  # generate and export build the model only
        tools += [lambda: generate(generate_config(ckpt=str(evil), text="hi")), lambda: export(evil)]
    for tool in tools:
        with pytest.raises(ValueError) as error:
            tool()
        message = str(error.value)
        assert named in message and str(evil) in message and "refusing" in message and "\n" not in message
        assert not victim.exists()


# -- 2. captions are literal -----------------------------------------------------------------

def test_captions_are_taken_literally_not_as_interpolations(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("T2F_TEST_SECRET", "s3cret")
    cfg = generate_config(ckpt=str(tmp_path / "x.ckpt"), text="${oc.env:T2F_TEST_SECRET}",
                          text_to="a \\${oc.env:T2F_TEST_SECRET}", mode="interpolate")
    assert free_text(cfg, "text") == "${oc.env:T2F_TEST_SECRET}"
    seen = []

    def captured(text=None, texts_file=None):
        seen.append(text)
        return [text]

    monkeypatch.setattr("t2f.generate.read_captions", captured)
    monkeypatch.setattr("t2f.generate.open_generator", lambda *a: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError, match="stop"):
        generate(cfg)
    assert seen == ["${oc.env:T2F_TEST_SECRET}"]
    assert "s3cret" not in str(OmegaConf.to_container(cfg, resolve=False))


# -- 4. divergence ---------------------------------------------------------------------------

def _guard_run(losses: list[dict[str, float]], every: int) -> DivergenceGuard:
    guard = DivergenceGuard(check_every=every)
    trainer = SimpleNamespace(global_step=0, world_size=1)
    module = SimpleNamespace(batches_seen=0, kimg=0.0, device=torch.device("meta"))
    guard.on_train_start(trainer, module)
    for values in losses:
        module.batches_seen += 1
        module.kimg += 0.008
        trainer.global_step += 2
        outputs = {k: torch.tensor(v) for k, v in values.items()}
        guard.on_train_batch_end(trainer, module, {**outputs, "kimg": torch.tensor(1.0)}, None, 0)
    return guard


def test_the_guard_names_the_first_batch_and_loss_that_went_non_finite() -> None:
    nan, inf = float("nan"), float("inf")
    steps = [{"loss/d": 1.0}, {"loss/d": 1.0, "loss/g": 2.0}, {"loss/d": 0.5},  # g every other batch
             {"loss/d": 0.4, "loss/g": inf}, {"loss/d": nan, "loss/g": nan}]
    guard = _guard_run(steps[:4], every=10)  # accelerator: no read yet, the flag waits on the device
    with pytest.raises(TrainingDiverged, match=r"at batch 4 \(optimizer step 8, 0.032 kimg\): loss/g became"):
        guard.check(SimpleNamespace(world_size=1))
    with pytest.raises(TrainingDiverged, match="at batch 4 .*: loss/g became"):
        _guard_run(steps, every=1)  # read every batch: stops at the first one
    _guard_run(steps[:3], every=1).check(SimpleNamespace(world_size=1))  # finite: nothing raised


def test_the_checkpoint_callback_never_saves_non_finite_weights(tmp_path) -> None:
    module = torch.nn.Linear(2, 2)
    path = tmp_path / "last.ckpt"
    trainer = SimpleNamespace(global_step=3, world_size=1, lightning_module=module, callback_metrics={},
                              save_checkpoint=lambda p: torch.save({"w": module.weight.detach().clone()}, p))
    callback = KimgCheckpoint(str(tmp_path), keep=0)
    callback.save_now(trainer, snapshot=True)  # a periodic save, but keep=0: no snapshot
    assert os.listdir(tmp_path) == ["last.ckpt"]
    good = path.read_bytes()
    with torch.no_grad():
        module.bias[1] = float("nan")
    trainer.global_step = 4
    with pytest.raises(TrainingDiverged, match=r"bias holds NaN or Inf, so .*last.ckpt was not written"):
        callback.save_now(trainer)
    callback.on_exception(trainer, module, KeyboardInterrupt())  # warns, does not raise, does not write
    callback.on_exception(trainer, module, TrainingDiverged("x"))
    assert path.read_bytes() == good


class _PoisonAt(pl.Callback):
    """Simulates a collapse: the critic's weights become NaN after ``images`` images."""

    def __init__(self, images: int) -> None:
        self.images = images

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if pl_module.images_seen == self.images:
            with torch.no_grad():
                next(pl_module.discriminator.parameters()).fill_(float("nan"))


def test_a_diverging_run_stops_and_keeps_the_good_checkpoint(tmp_path) -> None:
    train(compose_config(tmp_path))  # 5 batches to 0.04 kimg: last.ckpt and its snapshot
    ckpt_dir = tmp_path / "run" / "checkpoints"
    before = {p.name: p.read_bytes() for p in ckpt_dir.iterdir()}
    assert sorted(before) == ["last.ckpt", snapshot_name(40)]
    resumed = compose_config(tmp_path, ["model.total_kimg=0.08"])
    with pytest.raises(TrainingDiverged, match=r"at batch 7 \(optimizer step 14, 0.056 kimg\): loss/d"):
        train(resumed, extra_callbacks=[_PoisonAt(48)])
    assert {p.name: p.read_bytes() for p in ckpt_dir.iterdir()} == before  # Ctrl-C-style save skipped too
    with pytest.raises(SystemExit, match="^error: training diverged at batch 7"), run_errors():
        raise TrainingDiverged("training diverged at batch 7")


# -- 4. snapshots and the fallback -------------------------------------------------------------

def test_snapshots_keep_the_newest_and_resume_falls_back_past_a_damaged_last_ckpt(tmp_path, capsys) -> None:
    every = ["callbacks.checkpoint.every_kimg=0.008", "callbacks.checkpoint.keep=2"]  # a save every batch
    train(compose_config(tmp_path, every))
    ckpt_dir = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt", snapshot_name(32), snapshot_name(40)]
    assert [Path(p).name for p in snapshots(ckpt_dir)] == [snapshot_name(40), snapshot_name(32)]
    last = ckpt_dir / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])  # a damaged last.ckpt
    capsys.readouterr()
    metrics = train(compose_config(tmp_path, [*every, "model.total_kimg=0.056"]))
    out = capsys.readouterr().out
    assert f"Resuming from {ckpt_dir / snapshot_name(40)}, the newest readable snapshot" in out
    assert metrics["kimg"] == pytest.approx(0.056)
    assert torch.load(last, weights_only=True)["t2f"]["images_seen"] == 56
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt", snapshot_name(48), snapshot_name(56)]


def test_resume_with_nothing_readable_is_one_clear_line(tmp_path) -> None:
    cfg = compose_config(tmp_path)
    ckpt_dir = Path(cfg.callbacks.checkpoint.dirpath)
    ckpt_dir.mkdir(parents=True)
    (ckpt_dir / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    (ckpt_dir / snapshot_name(8)).write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=r"cannot resume this run directory: .*last.ckpt cannot be used "
                                          r"\(.*\) and no snapshot-kimg\*.ckpt in .* is readable"):
        _resume_path(cfg)
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    with pytest.raises(ConfigError, match=f"ckpt_path={text} cannot be resumed from: "):
        _resume_path(compose_config(tmp_path, [f"ckpt_path={text}"]))


# -- 5. logs kept across resume ----------------------------------------------------------------

def test_csv_history_survives_resume(tmp_path) -> None:
    logs = ["+logger.csv.flush_logs_every_n_steps=1", "trainer.log_every_n_steps=1"]
    train(compose_config(tmp_path, logs))
    metrics = tmp_path / "run" / "csv" / "metrics.csv"
    header = metrics.read_text().splitlines()[0].split(",")
    orphan = {k: "" for k in header} | {"step": "5", "loss/d": "123.0"}
    with open(metrics, "a", newline="") as f:  # a row a killed run logged after its last checkpoint
        csv.DictWriter(f, fieldnames=header).writerow(orphan)
    train(compose_config(tmp_path, [*logs, "model.total_kimg=0.08"]))
    rows = [r for r in csv.DictReader(open(metrics)) if r.get("loss/d")]
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(10)) and "123.0" not in {r["loss/d"] for r in rows}  # both halves, each once


# -- 6. interruptions ------------------------------------------------------------------------

class _StopAt(pl.Callback):
    def __init__(self, images: int, error: BaseException) -> None:
        self.images, self.error = images, error

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if pl_module.images_seen == self.images:
            raise self.error


@pytest.mark.parametrize("cause, error, code", [
    ("SIGTERM", "SIGTERMException", 143), ("Ctrl-C", "KeyboardInterrupt", 1)])
def test_an_interrupted_run_exits_non_zero_and_says_how_to_resume(tmp_path, capsys, cause, error, code) -> None:
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    stop = SIGTERMException() if error == "SIGTERMException" else KeyboardInterrupt()
    sigint = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT after a Ctrl-C
    try:
        with pytest.raises(SystemExit) as exit_info:
            train(compose_config(tmp_path), extra_callbacks=[_StopAt(16, stop)])
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    run = tmp_path / "run"
    assert f"Interrupted ({cause}) at 0.016 kimg (checkpoint: {run / 'checkpoints' / 'last.ckpt'}); resume with: " in err
    assert f"hydra.run.dir={run}" in err
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["t2f"]["images_seen"] == 16


@pytest.mark.slow
def test_sigterm_to_the_command_exits_143_with_the_resume_line(tmp_path) -> None:
    run = tmp_path / "run"
    args = [*TINY, *TINY_MODEL["dcgan"], "model=dcgan", "model.total_kimg=1000", f"hydra.run.dir={run}",
            f"paths.cache_dir={tmp_path.parent / 't2f-cache'}"]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "stderr.txt", "w") as stderr:  # a file: a full pipe can never block the run
        proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 120
            while not list((run / "samples").glob("*.png")) and time.monotonic() < deadline:  # the grid at
                time.sleep(0.2)  # train start: Lightning's SIGTERM handler is installed by then
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            proc.kill()
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 143, err[-2000:]
    assert "Interrupted (SIGTERM) at " in err and "resume with: python run.py " in err
    assert "Traceback" not in err
    assert (run / "checkpoints" / "last.ckpt").is_file()
