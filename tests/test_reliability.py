"""Issue 17: untrusted checkpoints build nothing foreign, captions stay literal, divergence stops
the run without touching good checkpoints, snapshots and the fallback past a damaged last.ckpt,
logs kept across resume, and interrupted runs (Ctrl-C, SIGTERM) exit non-zero saying so;
finished runs train nothing, one run per run directory, a cache that notices replaced images, and
every bad input one line that names its key or file."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from t2f import run_lock
from t2f.callbacks.checkpoint import KimgCheckpoint, snapshot_name, snapshots
from t2f.callbacks.divergence import DivergenceGuard, TrainingDiverged
from t2f.checkpoint_io import temporary_path
from t2f.checkpoints import load_checkpoint, resolve_device, user_errors
from t2f.cli import run_errors
from t2f.compare import compare
from t2f.conf import CONFIG_DIR
from t2f.data.face2text import read_annotations
from t2f.data.folder import read_captions
from t2f.data.images import ImageCache
from t2f.data.synthetic import SyntheticDataModule, SyntheticFaces
from t2f.data.transforms import Crop
from t2f.data.vocab import Vocabulary
from t2f.evaluate import evaluate
from t2f.export import export
from t2f.generate import free_text, generate
from t2f.growth import ProgressiveSchedule
from t2f.preflight import check_resume, check_trainer
from t2f.run_lock import LOCK_NAME, Owner
from t2f.train import _resume_path, train
from t2f.trusted import allowed_target, shipped_targets
from t2f.utils import ConfigError
from tests.conftest import REPO, TINY, TINY_MODEL, compose_config
from tests.helpers import dcgan_module, generate_config

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
    assert allowed_target("t2f.modules.gan.GANModule")  # t2f's own modules and nets, even without a config
    assert allowed_target("t2f.nets.progan.ProGANGenerator")
    for foreign in ["pathlib.Path.write_text", "builtins.open", "torch.load", "numpy.savetxt", "os.system",
                    "t2f.modules.gan.torch.load", "t2f.modules.gan.copy", "t2f.data.base.LimitedSet",
                    "t2f.nets.dcgan.math", "t2f.nets.recorded.generator_class", "subprocess.run", None, 3]:
        assert not allowed_target(foreign), foreign


def _evil_checkpoint(tmp_path: Path, victim: Path, where: str) -> Path:
    """A file that passes weights_only=True and asks Hydra to write ``victim``."""
    write = {"_target_": "pathlib.Path.write_text", "_partial_": False,
             "self": {"_target_": "pathlib.Path", "_args_": [str(victim)]}, "data": "pwned"}
    model = {"_target_": "t2f.modules.gan.GANModule",
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
    monkeypatch.setattr("t2f.generate.load_generator", lambda *a: (_ for _ in ()).throw(RuntimeError("stop")))
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
                              save_checkpoint=lambda p, weights_only=None: torch.save({"w": module.weight.detach().clone()}, p))
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
    hparams = OmegaConf.load(tmp_path / "run" / "csv" / "hparams.yaml")
    assert set(hparams) == set(OmegaConf.load(tmp_path / "run" / "config.yaml"))  # one config, no flattened copy
    metrics = tmp_path / "run" / "csv" / "metrics.csv"
    header = metrics.read_text().splitlines()[0].split(",")
    orphan = {k: "" for k in header} | {"step": "48", "loss/d": "123.0"}  # step: images seen
    with open(metrics, "a", newline="") as f:  # a row a killed run logged after its last checkpoint
        csv.DictWriter(f, fieldnames=header).writerow(orphan)
    train(compose_config(tmp_path, [*logs, "model.total_kimg=0.08"]))
    rows = [r for r in csv.DictReader(open(metrics)) if r.get("loss/d")]
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(8, 81, 8)) and "123.0" not in {r["loss/d"] for r in rows}  # both halves, each once


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
@pytest.mark.parametrize("to_group", [False, True], ids=["process", "group_with_loader_workers"])
def test_sigterm_to_the_command_exits_143_with_the_resume_line(tmp_path, to_group) -> None:
    """SLURM's time limit, scancel, ``timeout`` and systemd signal every process of the job, the
    loader's workers too: the run still stops after a whole batch and says how to resume."""
    run = tmp_path / "run"
    args = [*TINY, *TINY_MODEL["dcgan"], "model=dcgan", "model.total_kimg=1000", f"hydra.run.dir={run}",
            f"paths.cache_dir={tmp_path.parent / 't2f-cache'}", f"dataset.num_workers={2 if to_group else 0}"]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "stderr.txt", "w") as stderr:  # a file: a full pipe can never block the run
        proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=to_group)
        try:
            deadline = time.monotonic() + 120
            # the grid at train start: Lightning's SIGTERM handler is installed by then; with workers,
            # wait until they feed the loop
            while time.monotonic() < deadline and not (list((run / "samples").glob("*.png"))
                                                       and (not to_group or len(_children(proc.pid)) >= 2)):
                time.sleep(0.2)
            if to_group:
                assert len(_children(proc.pid)) >= 2, "the loader workers did not start"
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            proc.kill()
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 143, err[-2000:]
    assert "Interrupted (SIGTERM) at " in err and "resume with: python run.py " in err
    assert "Traceback" not in err and "killed by signal" not in err
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["t2f"]["images_seen"] > 0


def _children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid`` (Linux /proc)."""
    if not Path("/proc/self/stat").is_file():
        pytest.skip("needs Linux's /proc to see the loader's workers")
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


# -- 8. a finished run trains nothing; one run per run directory ---------------------------------

def test_a_finished_run_trains_nothing_and_a_busy_run_directory_is_refused(tiny_checkpoint, tmp_path, capsys) -> None:
    ckpt = tiny_checkpoint("dcgan")
    before = ckpt.read_bytes()
    cfg = compose_config(ckpt.parents[2], ["callbacks.samples.every_kimg=0.02"])  # the run itself, again
    capsys.readouterr()
    assert train(cfg) == {"kimg": pytest.approx(0.04)}
    assert "Nothing to train: this run is finished (0.04 of 0.04 kimg" in capsys.readouterr().out
    assert ckpt.read_bytes() == before and not (ckpt.parents[1] / LOCK_NAME).exists()  # released

    run = tmp_path / "run"
    run.mkdir()
    live = Owner(os.getppid(), socket.gethostname(), run_lock._start_time(os.getppid()), "", "today")
    (run / LOCK_NAME).write_text(json.dumps(dataclasses.asdict(live)))
    with pytest.raises(ConfigError, match=rf"run directory {run} is in use by another run \(pid {os.getppid()} "):
        train(compose_config(tmp_path))
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # refused before writing anything
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    for stale in (dataclasses.replace(live, pid=child.pid), dataclasses.replace(live, started="1")):  # dead, reused
        (run / LOCK_NAME).write_text(json.dumps(dataclasses.asdict(stale)))
        run_lock.release(run_lock.acquire(run))  # taken over, then removed
        assert not (run / LOCK_NAME).exists()


# -- 9. the prepared image cache -----------------------------------------------------------------

def test_the_image_cache_decodes_16_bit_png_notices_replaced_files_and_removes_stale_temporaries(tmp_path) -> None:
    root, cache_dir = tmp_path / "images", tmp_path / "cache"
    root.mkdir()
    Image.fromarray(np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)).save(root / "gray16.png")
    Image.new("RGB", (16, 16), (10, 20, 30)).save(root / "face.png")
    files = ["face.png", "gray16.png"]
    cache = ImageCache(cache_dir, "folder", root, files, 8, Crop())
    cache_dir.mkdir()
    ours = Path(temporary_path(str(cache.path)))  # left by a prepare killed with -9
    other = Path(temporary_path(str(cache_dir / "folder-8px-0123456789abcdef.npy")))  # another cache's writer
    ours.write_bytes(b"x")
    other.write_bytes(b"x")
    images, _ = cache.get(workers=1, progress=False)
    assert not ours.exists() and other.exists()
    gray = images[1].astype(float)
    assert 100 < gray.mean() < 155 and gray.min() < 40 and np.all(gray[..., 0] == gray[..., 2])  # not white
    assert ImageCache(cache_dir, "folder", root, files, 8, Crop()).key == cache.key
    Image.new("RGB", (16, 16), (200, 20, 30)).save(root / "face.png")  # replaced under the same name
    os.utime(root / "face.png", ns=(1, 1))
    assert ImageCache(cache_dir, "folder", root, files, 8, Crop()).key != cache.key


# -- 10. evaluate prints before it writes --------------------------------------------------------

def test_evaluate_prints_the_table_before_it_fails_to_write_the_json(tiny_checkpoint, tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "metrics.json"  # cannot be written, even by root
    cfg = _evaluate_config(tmp_path.parent / "t2f-cache", ckpt=str(tiny_checkpoint("dcgan")), out=str(out))
    with pytest.raises(ValueError, match=rf"the results above were not saved: cannot write to {blocker} .*out=PATH"):
        evaluate(cfg)
    assert "swd " in capsys.readouterr().out


def _evaluate_config(cache: Path, **values: object) -> DictConfig:
    """conf/evaluate.yaml with metrics=swd, small, as the CLI would compose it."""
    base = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    for key in ("defaults", "hydra"):
        base.pop(key)
    metrics = OmegaConf.load(CONFIG_DIR / "metrics" / "swd.yaml")
    cfg = OmegaConf.merge(base, {"metrics": metrics, "num_samples": 16, "num_real": 16, "batch_size": 8,
                                 "device": "cpu", "paths": {"cache_dir": str(cache)}}, values)
    cfg.metrics.swd.dirs_per_repeat = 8
    return cfg


# -- 11. crashes that become one line ------------------------------------------------------------

@pytest.mark.parametrize("case, key", [
    ("devices", "trainer.devices=3 trains 3 processes with DDP, .* use trainer=ddp_cpu trainer.devices=3"),
    ("num_samples", "callbacks.samples.num_samples=0 must be >= 1"),
    ("seeds", "seeds=0 must be a whole number >= 1"),
    ("psi", r"psi=1.5 must be a number in \[0, 1\]: the truncation strength"),
])
def test_crashes_become_one_line_naming_the_key(tmp_path, case, key) -> None:
    def make() -> None:
        if case == "devices":
            trainer = pl.Trainer(accelerator="cpu", devices=3, logger=False, enable_progress_bar=False,
                                 enable_model_summary=False)
            check_trainer(trainer, OmegaConf.create({"trainer": {"devices": 3}}), torch.nn.Linear(1, 1), 96)
        elif case == "num_samples":
            instantiate({"_target_": "t2f.callbacks.samples.SampleGrid", "dirpath": str(tmp_path), "num_samples": 0})
        elif case == "psi":
            evaluate(_evaluate_config(tmp_path, ckpt=str(tmp_path / "never_read.ckpt"), psi=1.5))
        else:
            evaluate(_evaluate_config(tmp_path, ckpt=str(tmp_path / "never_read.ckpt"), seeds=0))

    with pytest.raises(SystemExit, match=f"^error: {key}") as stop, user_errors():  # also out of instantiate
        make()
    assert "\n" not in str(stop.value)


def test_compare_skips_a_run_with_garbled_files(tmp_path, capsys) -> None:
    for name, config in (("good", "seed: 1\n"), ("yaml", "seed: [1,\n  a: {{\n"), ("csv", "seed: 2\n")):
        (tmp_path / name / "csv").mkdir(parents=True)
        (tmp_path / name / "config.yaml").write_text(config)
        (tmp_path / name / "csv" / "metrics.csv").write_text("step,kimg,loss/d\n0,0.008,1.5\n")
    (tmp_path / "csv" / "csv" / "metrics.csv").write_bytes(b"step,loss/d\n\xff\xfe 1,\xe9\n")  # not UTF-8
    written = compare([tmp_path], tmp_path / "out")
    err = capsys.readouterr().err
    assert f"warning: skipping {tmp_path / 'yaml'}: its files cannot be read (" in err
    assert f"warning: skipping {tmp_path / 'csv'}: its files cannot be read (UnicodeDecodeError" in err
    assert "| good |" in written["markdown"].read_text()


# -- 12. bad inputs: one line that names the key or the file --------------------------------------

def _resume_after_change(tmp_path: Path, changed: str) -> None:
    """check_resume of a checkpoint saved with model.generator.width=8 dataset.min_freq=1 (a crafted file: no
    training) by a run that changed ``changed``: the weights' shapes, or the vocabulary."""
    saved = {"model": {"generator": {"width": 8}}, "dataset": {"min_freq": 1}}
    now = {"model": {"generator": {"width": 16}}, "dataset": {"min_freq": 3}}
    now = {**saved, changed.split(".")[0]: now[changed.split(".")[0]]}

    def module(config: dict):
        return dcgan_module(latent_dim=4, width=config["model"]["generator"]["width"])

    def vocab(config: dict) -> Vocabulary:
        return Vocabulary(["a", "b", "c"] if config["dataset"]["min_freq"] == 1 else ["a"])

    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": module(saved).state_dict(), "SyntheticDataModule": {"vocab": vocab(saved).state_dict()},
                "t2f": {"images_seen": 8, "config": saved}}, path)
    cfg = OmegaConf.create({**now, "paths": {"output_dir": str(tmp_path)}})
    check_resume(str(path), cfg, module(now), SimpleNamespace(vocab=vocab(now)))


def _bad_input(case: str, tmp_path: Path) -> None:
    """Builds or calls what ``case`` names with the bad input."""
    blocked = tmp_path / "file"
    blocked.write_text("")  # a folder inside a file: unwritable, even by root
    latin1 = tmp_path / ("clean.json" if case == "annotations" else "captions.json")
    latin1.write_bytes('[{"image": "a.jpg", "descriptions": ["caf\u00e9"]}]'.encode("latin-1"))
    schedule = {"max_resolution": 16, "kimg": 1}
    {
        "optimizer_lr": lambda: dcgan_module(latent_dim=4, optimizer_d=partial(torch.optim.Adam, lr=-1)),
        "schedule_lr": lambda: ProgressiveSchedule(**schedule, lr={4: 0.01, 8: -1}),
        "schedule_batch": lambda: ProgressiveSchedule(**schedule, batch_size={4: 8, 8: 0}),
        "stage_batch": lambda: check_trainer(
            pl.Trainer(accelerator="cpu", devices=1, logger=False), OmegaConf.create({}),
            SimpleNamespace(schedule=ProgressiveSchedule(**schedule, batch_size={4: 8, 8: 1000})), 96),
        "ckpt_text": lambda: _resume_path(OmegaConf.create({"ckpt_path": str(latin1)})),
        "seed": lambda: train(OmegaConf.create({"seed": "abc", "paths": {"output_dir": str(tmp_path / "run")}})),
        "num_workers": lambda: SyntheticDataModule(num_workers=-1),
        "size": lambda: SyntheticDataModule(size=0),
        "architecture": lambda: _resume_after_change(tmp_path, "model.generator.width"),
        "vocabulary": lambda: _resume_after_change(tmp_path, "dataset.min_freq"),
        "annotations": lambda: read_annotations(latin1),
        "captions": lambda: read_captions(latin1),
        "cache": lambda: SyntheticFaces(size=2, resolution=8, cache_dir=blocked / "synthetic"),
        "image_cache": lambda: ImageCache(blocked / "prepared", "folder", tmp_path, ["a.png"], 8, Crop()).get(),
        "generate_dir": lambda: generate(generate_config(ckpt=str(tmp_path / "x.ckpt"), out=str(tmp_path))),
        "export_dir": lambda: export(tmp_path / "last.ckpt", out=tmp_path),
        "readonly_out": lambda: generate(generate_config(ckpt=str(tmp_path / "x.ckpt"), out=str(blocked / "a.png"))),
        "device": lambda: resolve_device("cuda:99" if torch.cuda.is_available() else "cuda"),
        "min_freq": lambda: Vocabulary.build(["a smiling man", "a woman"], min_freq=50),
    }[case]()


@pytest.mark.parametrize("case, message", [
    ("optimizer_lr", "model.optimizer_d.lr=-1 must be positive"),
    ("schedule_lr", r"model.schedule.lr must be positive, got \{4: 0.01, 8: -1\}"),
    ("schedule_batch", "model.schedule.batch_size must be positive integers"),
    ("stage_batch", "model.schedule.batch_size is 1000 at 8 px, more than the 96 training images"),
    ("ckpt_text", r"ckpt_path=.*captions.json cannot be resumed from: it is damaged or not a checkpoint \("),
    ("seed", "seed=abc must be a whole number"),
    ("num_workers", "dataset.num_workers=-1 must be >= 0"),
    ("size", "dataset.size=0 must be >= 1"),
    ("architecture", r"cannot resume from .*: its weights do not fit this model \(.* of another shape.*\); this run "
                     r"sets model.generator.width=16 \(the checkpoint's: 8\)"),
    ("vocabulary", r"this dataset's vocabulary \(5 words\) differs from the checkpoint's \(7\); this run sets "
                   r"dataset.min_freq=3 \(the checkpoint's: 1\)"),
    ("annotations", r"clean.json is not UTF-8 text \(byte 0xe9"),
    ("captions", r"captions.json is not UTF-8 text"),
    ("cache", r"cannot write to .*synthetic \(.*\): set T2F_CACHE_DIR"),
    ("image_cache", r"cannot write to .*prepared \(.*\): set T2F_CACHE_DIR"),
    ("generate_dir", r"out=.* is a directory: give a file name in it, e.g. out=.*samples.png"),
    ("export_dir", r"out=.* is a directory: give a file name in it, e.g. out=.*last.generator.pt"),
    ("readonly_out", r"cannot write to .*file \(.*\): choose a writable file with out=PATH"),
    ("device", r"device=cuda.*(no GPU is available|only \d+ GPU)"),
    ("min_freq", r"dataset.min_freq=50 keeps no word: the most frequent training caption word appears 2 time"),
])
def test_bad_inputs_are_one_line_naming_the_key_or_file(tmp_path, case, message) -> None:
    with pytest.raises(SystemExit, match=f"^error: .*{message}") as stop, run_errors():
        _bad_input(case, tmp_path)
    assert "\n" not in str(stop.value)
