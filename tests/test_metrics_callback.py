"""Metrics during training: logging, best checkpoint, offline Inception, protocol cache keys, DDP."""

from __future__ import annotations

import csv
import os
import urllib.error
import warnings
from pathlib import Path

import pytest
import torch

from t2f.metrics import InceptionWeightsUnavailableWarning
from t2f.metrics import inception as inception_mod
from t2f.metrics.suite import MetricSuite, dataset_identity
from t2f.train import train
from tests.conftest import compose_config
from tests.helpers import METRICS_FAST, StubGenerator, cli_tiny, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: one thread is faster


def _rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(run / "csv" / "metrics.csv")))


def test_tiny_training_logs_swd_keeps_best_and_warns_once_without_inception(tmp_path, monkeypatch) -> None:
    def offline(dst: Path) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(inception_mod, "_download_inception_weights", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(inception_mod, "_WARNED", set())
    cfg = compose_config(tmp_path, ["metrics=[swd,fid]", *METRICS_FAST, "metrics.swd.dirs_per_repeat=32",
                                    "callbacks.checkpoint.monitor=metrics/swd"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        final = train(cfg)
    ours = [w for w in caught if issubclass(w.category, InceptionWeightsUnavailableWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    run = Path(cfg.paths.output_dir)
    swd = [float(r["metrics/swd"]) for r in _rows(run) if r.get("metrics/swd")]
    assert len(swd) >= 2 and all(v > 0 for v in swd)  # every 0.016 kimg and at the end
    assert final["metrics/swd"] == pytest.approx(swd[-1])
    rows = _rows(run)  # one x-axis: every row's step is the images seen at its kimg, losses and metrics alike
    assert all(int(r["step"]) == round(float(r["kimg"]) * 1000) for r in rows if r.get("kimg"))
    moments = {r["step"] for r in rows if r.get("metrics/swd")} & {r["step"] for r in rows if r.get("loss/d")}
    assert moments and any(r.get("lr/d") for r in rows)
    assert not any("fid" in k for k in final)
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    state = best["callbacks"]
    ckpt_cb = next(v for k, v in state.items() if k.startswith("KimgCheckpoint"))
    assert ckpt_cb["best_model_score"] == pytest.approx(min(swd))
    assert not any("inception" in k.lower() or "extractor" in k for k in best["state_dict"])
    assert len(list((tmp_path.parent / "t2f-cache" / "metrics").glob("swd-*.pt"))) == 1  # real stats cached once


def test_cache_key_changes_with_every_part_of_the_protocol(tmp_path) -> None:
    from t2f.data.synthetic import SyntheticDataModule

    root = tmp_path.parent / "t2f-cache" / "synthetic"
    cache = tmp_path / "metrics"

    def run(res=16, num_real=24, split="train", ds_seed=0, batch_size=8, swd=None):
        dm = SyntheticDataModule(root=str(root), size=96, val_size=32, resolution=32, seed=ds_seed,
                                 batch_size=batch_size)
        config = {"_target_": "SyntheticDataModule", "size": 96, "val_size": 32, "resolution": 32, "seed": ds_seed,
                  "batch_size": batch_size}
        suite = MetricSuite(swd={"dirs_per_repeat": 16, "dir_repeats": 1, **(swd or {})}, num_samples=8,
                            num_real=num_real, batch_size=8, cache_dir=str(cache), real_split=split)
        result = suite.evaluate(StubGenerator(res), dm, config)
        return result, {p.name for p in cache.glob("swd-*.pt")}

    base, files = run()
    assert len(files) == 1 and base.values["swd"] > 0
    again, same = run(batch_size=4)  # loader settings are not part of the protocol
    assert same == files and again.values == base.values
    seen = set(files)
    for change in (dict(res=32), dict(num_real=20), dict(split="val"), dict(ds_seed=1), dict(swd={"patch_size": 5})):
        result, now = run(**change)
        new = now - seen
        assert len(new) == 1, change  # a changed option never reuses stale statistics
        assert result.protocols["swd"].key() != base.protocols["swd"].key()
        seen |= now
    # The reported protocol says what was measured.
    assert "synthetic/train at 16px" in base.protocols["swd"].describe()
    dm = SyntheticDataModule(root=str(root), size=96, val_size=32, resolution=32)
    assert dataset_identity(dm).fingerprint != dataset_identity(dm, {"seed": 3}).fingerprint


def test_truncated_fakes_are_measured_against_the_same_real_statistics(tmp_path) -> None:
    """psi < 1 draws the fakes truncated: other numbers, a protocol that names psi, and the real
    statistics of psi = 1 reused (the real faces do not change)."""
    from t2f.data.synthetic import SyntheticDataModule

    dm = SyntheticDataModule(root=str(tmp_path.parent / "t2f-cache" / "synthetic"), size=96, val_size=32,
                             resolution=32, batch_size=8)
    config = {"_target_": "SyntheticDataModule", "size": 96, "val_size": 32, "resolution": 32}
    cache = tmp_path / "metrics"
    suite = MetricSuite(swd={"dirs_per_repeat": 16, "dir_repeats": 1}, num_samples=8, num_real=24, batch_size=8,
                        cache_dir=str(cache))
    plain = suite.evaluate(StubGenerator(16), dm, config)
    truncated = suite.evaluate(StubGenerator(16), dm, config, psi=0.5)
    assert truncated.values["swd"] != plain.values["swd"]
    assert "psi" not in plain.protocols["swd"].options and truncated.protocols["swd"].options["psi"] == 0.5
    assert truncated.protocols["swd"].key() != plain.protocols["swd"].key()
    assert len(list(cache.glob("swd-*.pt"))) == 1
    again = suite.evaluate(StubGenerator(16), dm, config, psi=1.0)
    assert again.values == plain.values and again.protocols["swd"].key() == plain.protocols["swd"].key()


@pytest.mark.slow
def test_ddp_cpu_training_logs_synced_metric_equal_to_single_process(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "ddp"
    args = ["trainer=ddp_cpu", "trainer.max_steps=6", *cli_tiny(tmp_path), f"hydra.run.dir={run}",
            "metrics=swd", *METRICS_FAST, "metrics.swd.dirs_per_repeat=32", "metrics.every_kimg=100",
            "+logger.csv.flush_logs_every_n_steps=1"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    logged = [float(r["metrics/swd"]) for r in _rows(run) if r.get("metrics/swd")]
    assert len(logged) == 1  # once, at the end (rank 0 writes)
    # The same checkpoint evaluated by one process gives the same number.
    from t2f.evaluate import load_checkpoint

    module, datamodule, ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["t2f"]["images_seen"] == 48
    cfg = ckpt["t2f"]["config"]["metrics"]
    suite = MetricSuite(swd=cfg["swd"], num_samples=16, num_real=32, batch_size=8, cache_dir=cfg["cache_dir"])
    # Generate as each rank did: channels-last weights (the module's setup() in training) and
    # t2f.train's per-rank share of the cores, each rank one batch of 8. SWD takes its patches
    # at positions hashed from each image's uint8 pixels, and this tiny generator's pixels sit
    # at 0, a uint8 rounding step: a last-bit difference from other kernels (layout, threads)
    # can move a whole image's patches (0.1-0.3% of SWD per flipped pixel), which no small
    # tolerance absorbs. With the same images, rel=1e-4 covers the summation order of the SWD.
    module.setup("fit")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # ddp_cpu: 2 processes (one_thread restores)
    single = suite.evaluate(module, datamodule, module.run_config["dataset"])
    assert single.values["swd"] == pytest.approx(logged[0], rel=1e-4)
