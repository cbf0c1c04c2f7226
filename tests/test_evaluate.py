"""``python -m t2f.evaluate`` on a checkpoint of a short T2F training: table and JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from t2f.train import train
from tests.conftest import REPO, compose_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: one thread is faster


@pytest.mark.slow
def test_evaluate_cli_prints_table_and_writes_json(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, [], model="t2f")
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval" / "result.json"
    args = [f"ckpt={ckpt}", "metrics=[swd,alignment,diversity]", "num_samples=16", "num_real=32", "batch_size=8",
            "seeds=2", f"out={out}", f"paths.cache_dir={tmp_path.parent / 't2f-cache'}", "metrics.swd.dirs_per_repeat=32",
            "metrics.alignment.epochs=1", "metrics.alignment.width=8", "metrics.alignment.val_images=16",
            "metrics.alignment.min_count=2", "metrics.diversity.captions=4", "metrics.diversity.per_caption=4",
            "metrics.diversity.min_real=2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "t2f.evaluate", *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["model"] == "t2f" and report["resolution"] == 32 and report["seeds"] == [0, 1]
    metrics = report["metrics"]
    for name in ("swd", "alignment", "alignment_accuracy", "r_precision", "alignment_accuracy_real",
                 "r_precision_vs_real", "classifier_accuracy", "diversity", "swd_conditional"):
        assert name in metrics, sorted(metrics)
        assert len(metrics[name]["values"]) == 2 and metrics[name]["protocol_key"]
    protocols = dict(ln.split(": ", 1) for ln in result.stdout.splitlines() if re.match(r"P\d+: ", ln))
    assert sorted(protocols.values()) == sorted({m["protocol"] for m in metrics.values()})  # each printed once
    assert metrics["swd"]["std"] > 0  # different seeds, different samples
    assert "seed=[0, 1]" in metrics["swd"]["protocol"]
    assert "mean ± std" in result.stdout and f"Wrote {out}" in result.stdout
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("swd "))
    assert f"{metrics['swd']['mean']:.4f} ± {metrics['swd']['std']:.4f}" in line
    assert protocols[line.split()[-1]] == metrics["swd"]["protocol"]  # the row names its protocol
    assert all(len(ln) < 100 for ln in result.stdout.splitlines() if ln.startswith(("swd", "alignment")))
    assert not list(tmp_path.glob("outputs")) and not list(tmp_path.glob("*.log"))  # writes nothing else
