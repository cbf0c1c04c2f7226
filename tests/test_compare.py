"""``python -m t2f.compare``: two tiny runs (logger=csv, and TensorBoard + W&B with their CSV log) into one table and plots."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from PIL import Image

from t2f.compare import direction, main
from t2f.runs import read_csv_history
from t2f.train import train
from tests.conftest import compose_config

SWD = ["metrics=swd", "metrics.num_samples=16", "metrics.num_real=32", "metrics.batch_size=8",
       "metrics.swd.dirs_per_repeat=32", "metrics.every_kimg=0.016", "trainer.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, dict[str, float], dict[str, float]]:
    """A sweep-like folder with run 0 (csv logger, lr 2e-4) and run 1 (tensorboard + wandb, lr 1e-3)."""
    root = tmp_path_factory.mktemp("compare")
    sweep = root / "sweep"
    sweep.mkdir()
    finals = []
    for job, (logger, lr) in enumerate([("csv", 0.0002), ("[tensorboard,wandb]", 0.001)]):
        overrides = [f"logger={logger}", f"model.optimizer_g.lr={lr}", *SWD, "+logger.csv.flush_logs_every_n_steps=1"]
        cfg = compose_config(root / str(job), overrides)
        finals.append(train(cfg))
        shutil.move(cfg.paths.output_dir, sweep / str(job))
    return sweep, finals[0], finals[1]


def _table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_table_lists_differing_config_and_final_and_best_metrics(two_runs, tmp_path, capsys):
    sweep, final_csv, final_tb = two_runs
    assert main([str(sweep / "0"), str(sweep / "1"), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    rows = _table(tmp_path / "out" / "comparison.csv")
    header = list(rows[0])
    assert [r["run"] for r in rows] == ["sweep/0", "sweep/1"]
    assert [r["log"] for r in rows] == ["csv", "csv"]  # W&B and TensorBoard runs keep a CSV log too
    assert [float(r["model.optimizer_g.lr"]) for r in rows] == [0.0002, 0.001]  # differs: shown
    for same in ("seed", "model.optimizer_d.lr", "dataset.size", "paths.output_dir"):
        assert same not in header  # equal in both runs (paths inside each run read <run>)
    assert "metrics/swd best (min)" in header and "loss/d best (min)" in header

    logged = read_csv_history(sweep / "0" / "csv" / "metrics.csv")
    swd = [r["metrics/swd"] for r in logged if "metrics/swd" in r]
    assert len(swd) >= 3  # every 0.016 kimg and at the end
    assert float(rows[0]["metrics/swd final"]) == pytest.approx(swd[-1])
    assert float(rows[0]["metrics/swd best (min)"]) == pytest.approx(min(swd))
    loss_d = [r["loss/d"] for r in logged if "loss/d" in r]
    assert float(rows[0]["loss/d final"]) == pytest.approx(loss_d[-1])
    assert float(rows[0]["metrics/swd final"]) == pytest.approx(final_csv["metrics/swd"])
    assert float(rows[1]["metrics/swd final"]) == pytest.approx(final_tb["metrics/swd"])
    assert float(rows[1]["kimg"]) == pytest.approx(0.04)

    markdown = (tmp_path / "out" / "comparison.md").read_text()
    assert markdown in printed and "| sweep/0 |" in markdown and "metrics/swd best (min)" in markdown
    for plot in ("losses.png", "metrics.png"):
        with Image.open(tmp_path / "out" / plot) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 300


def test_sweep_directory_expands_to_its_jobs(two_runs, tmp_path):
    sweep, _, _ = two_runs
    assert main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    assert [r["run"] for r in _table(tmp_path / "out" / "comparison.csv")] == ["sweep/0", "sweep/1"]


def test_every_logger_keeps_the_csv_log_beside_its_own_files(two_runs):
    """logger=[tensorboard,wandb] writes both loggers' files and the CSV log compare reads, with
    the same values: the TensorBoard events and the W&B run are not needed to compare runs."""
    sweep, _, final = two_runs
    run = sweep / "1"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert list((run / "wandb").glob("offline-run-*/*.wandb"))
    logged = read_csv_history(run / "csv" / "metrics.csv")
    for key in ("metrics/swd", "loss/d", "loss/g"):
        assert [r for r in logged if key in r], key
    assert [r["metrics/swd"] for r in logged if "metrics/swd" in r][-1] == pytest.approx(final["metrics/swd"])


def test_a_directory_that_is_not_a_run_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_directions_are_explicit():
    assert [direction(k) for k in ("loss/d", "metrics/swd", "metrics/fid", "metrics/kid")] == ["min"] * 4
    assert [direction(k) for k in ("metrics/is", "metrics/alignment", "metrics/r_precision")] == ["max"] * 3
    assert direction("metrics/kid_std") is None
    assert direction("metrics/diversity") is None and direction("metrics/alignment_accuracy_real") is None
    assert direction("metrics/swd_conditional") == "min" and direction("metrics/alignment_accuracy") == "max"
