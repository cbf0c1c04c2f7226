"""The progress display: kimg of the total, resolution and alpha, speed, ETA and losses."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

from t2f.callbacks import progress
from t2f.callbacks.progress import KimgProgressBar
from t2f.train import train
from t2f.utils import format_duration
from tests.conftest import compose_config

LINE = re.compile(r"^kimg (\d+\.\d{3})/0\.08 \((\d+)%\) \| (\d+) px a=(\d\.\d\d) \| [\d.]+ img/s, [\d.]+ s/kimg \| "
                  r"ETA [\d:?]+ \| loss/d -?[\d.]+ loss/g -?[\d.]+$")


def test_a_log_file_gets_a_plain_line_every_n_kimg(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(progress, "RATE_WINDOW_S", 0.0)
    cfg = compose_config(tmp_path, ["callbacks.progress_bar.refresh_rate=1", "callbacks.progress_bar.log_every_kimg=0.02"],
                         model="t2f")
    train(cfg)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("kimg ")]
    assert len(lines) == 4, lines  # 0.02, 0.04, 0.06 and 0.08 of 0.08 kimg: pytest's stdout is no terminal
    matches = [LINE.match(ln) for ln in lines]
    assert all(matches), lines
    assert [m.group(2) for m in matches][-1] == "100"
    assert {m.group(3) for m in matches} >= {"8", "32"}  # the resolution grows, printed as a whole number


def module(kimg: float, resolution: int = 16, alpha: float = 0.5) -> SimpleNamespace:
    return SimpleNamespace(images_seen=int(kimg * 1000), kimg=kimg, total_kimg=100.0, schedule=object(),
                           resolution=resolution, alpha=alpha)


def test_a_terminal_gets_one_live_bar_in_kimg_with_eta(monkeypatch) -> None:
    monkeypatch.setattr(progress, "RATE_WINDOW_S", 0.0)
    clock = iter(range(100))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    out = io.StringIO()
    bar = KimgProgressBar(refresh_rate=1, interactive=True, file=out)
    trainer = SimpleNamespace(is_global_zero=True, progress_bar_metrics={"loss/d": 1.5, "loss/g": -0.25})
    bar.on_train_start(trainer, module(50.0))
    bar.on_train_batch_end(trainer, module(51.0))  # 1,000 images in one second
    text = out.getvalue()
    assert "51.0/100 kimg" in text and " 51%" in text
    assert "16 px a=0.50" in text and "1000.0 img/s, 1.0 s/kimg" in text and "ETA 0:49" in text
    assert "loss/d 1.500 loss/g -0.250" in text
    bar.on_train_end(trainer, module(100.0))
    assert "100.0/100 kimg" in out.getvalue() and ", , " not in out.getvalue() and bar.bar is None and not bar.lines


def test_only_rank_zero_shows_progress_and_zero_turns_it_off() -> None:
    for rank_zero, rate in ((False, 1), (True, 0)):
        out = io.StringIO()
        bar = KimgProgressBar(refresh_rate=rate, interactive=False, log_every_kimg=1, file=out)
        trainer = SimpleNamespace(is_global_zero=rank_zero, progress_bar_metrics={})
        bar.on_train_start(trainer, module(0.0))
        bar.on_train_batch_end(trainer, module(5.0))
        bar.on_train_end(trainer, module(5.0))
        assert out.getvalue() == ""


def test_durations_read_as_clock_times() -> None:
    assert format_duration(49) == "0:49" and format_duration(3723) == "1:02:03"
    assert format_duration(float("inf")) == "?" and format_duration(float("nan")) == "?"


def test_side_work_gets_a_bar_on_rank_zero_only(monkeypatch) -> None:
    from pytorch_lightning.utilities import rank_zero_only
    from tqdm.auto import tqdm

    from t2f.utils import progress

    items = [1, 2, 3]
    bar = progress(items, "real images")
    assert isinstance(bar, tqdm) and list(bar) == items
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert progress(items, "real images") is items
