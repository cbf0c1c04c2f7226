"""Progressive growing: the schedule as a function of kimg, the callback, and resume mid-fade."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from t2f.callbacks.progressive import ProgressiveGrowing
from t2f.growth import ProgressiveSchedule, fade_real
from t2f.nets.layers import downsample2x, upsample2x
from t2f.train import train
from tests.conftest import compose_config
from tests.helpers import checkpoint_growth


def test_schedule_timeline_stage_and_alpha_as_functions_of_kimg():
    s = ProgressiveSchedule(max_resolution=32, kimg={4: 10, 8: 20, 16: 20, 32: 40}, fade_in_fraction=0.5)
    assert s.resolutions == [4, 8, 16, 32] and s.total_kimg == 90
    assert s.at(0).resolution == 4 and s.at(0).alpha == 1.0  # nothing to fade from at 4 px
    assert s.at(9.99).stage == 0
    assert (s.at(10).resolution, s.at(10).alpha) == (8, 0.0)  # a new stage starts fully faded out
    assert s.at(15).alpha == pytest.approx(0.5)  # half way through the 10 kimg fade-in
    assert s.at(20).alpha == 1.0 and s.at(29.9).resolution == 8  # then stable
    assert (s.at(30).resolution, s.at(40).alpha) == (16, 1.0)
    assert s.at(55).resolution == 32 and s.at(55).alpha == pytest.approx(0.25)
    assert s.at(1000).resolution == 32 and s.at(1000).alpha == 1.0


def test_schedule_fills_unnamed_resolutions_from_the_nearest_named_one_below():
    # T2F's default at 128 px: 64 and 128 px take 32 px's 72 kimg and 0.005
    s = ProgressiveSchedule(128, kimg={"4": 6, "8": 12, "16": 24, "32": 72}, fade_in_fraction=0.85,
                            lr={"4": 0.01, "32": 0.005}, batch_size={16: 16})
    assert s.resolutions == [4, 8, 16, 32, 64, 128]
    assert s.kimg_per_stage == [6, 12, 24, 72, 72, 72] and s.total_kimg == 258
    assert s.starts_kimg == [0, 6, 18, 42, 114, 186]
    assert s.learning_rates == [0.01, 0.01, 0.01, 0.005, 0.005, 0.005]
    assert s.batch_sizes == [None, None, 16, 16, 16, 16]  # None: the dataset's batch size
    state = s.at(150)  # 36 kimg into the 64 px stage, whose fade-in lasts 0.85 * 72 = 61.2 kimg
    assert (state.stage, state.resolution) == (4, 64) and state.alpha == pytest.approx(36 / 61.2)
    plan = s.plan()
    assert [(p.resolution, p.fade_kimg, p.stable_kimg) for p in plan[:2]] == [(4, 0, 6), (8, pytest.approx(10.2),
                                                                                       pytest.approx(1.8))]
    # one number: every resolution; keys as Hydra writes them ("64") or as YAML does (64)
    assert ProgressiveSchedule(16, kimg=5, lr=0.002).kimg_per_stage == [5, 5, 5]
    assert ProgressiveSchedule(16, kimg=5, lr=0.002).learning_rates == [0.002] * 3
    assert ProgressiveSchedule(64, kimg={4: 1, "64": 9}).kimg_per_stage == [1, 1, 1, 1, 9]
    # StyleGAN's rule (experiment=stylegan_celeba128): 600 kimg at 8 px, 600 + 600 per later resolution
    paper = ProgressiveSchedule(128, kimg={8: 600, 16: 1200}, start_resolution=8, fade_in_fraction=0.5)
    assert paper.kimg_per_stage == [600, 1200, 1200, 1200, 1200] and paper.total_kimg == 5400
    assert [p.fade_kimg for p in paper.plan()] == [0, 600, 600, 600, 600]
    # epochs per resolution (the original T2F): 128 px takes 64 px's 10 epochs
    epochs = ProgressiveSchedule(128, epochs={4: 160, 8: 80, 16: 40, 32: 20, 64: 10}, images_per_epoch=500)
    assert epochs.kimg_per_stage == [80, 40, 20, 10, 5, 5]


def test_schedule_per_stage_lookups():
    s = ProgressiveSchedule(max_resolution=16, kimg=5, start_resolution=8,
                            batch_size={8: 32, 16: 16}, lr={8: 1e-3, 16: 5e-4})
    assert s.resolutions == [8, 16] and s.kimg_per_stage == [5.0, 5.0] and s.start_stage == 1
    assert s.batch_size(1) == 32 and s.batch_size(2) == 16 and s.learning_rate(2) == 5e-4
    assert ProgressiveSchedule(16, kimg=1).batch_size(2) is None  # the dataset's


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_resolution=30, kimg=1), "max_resolution=30 is not a power of two"),
    (dict(max_resolution=32, kimg=[1, 2, 3, 4]), "must be a number or a mapping from resolution"),
    (dict(max_resolution=32, kimg={8: 1}), "names no resolution at or below 4 px"),
    (dict(max_resolution=32, kimg={4: 1, 12: 2}), "12.*not a power-of-two resolution"),
    (dict(max_resolution=32, kimg={4: 1, "4": 2}), "gives 4 px twice"),
    (dict(max_resolution=32, kimg=1, batch_size={4: 0}), "batch_size must be positive integers"),
    (dict(max_resolution=8, kimg=1, start_resolution=16), "above the model's resolution"),
    (dict(max_resolution=8, kimg={4: 1, 8: -1}), "must be positive"),
    (dict(max_resolution=8, kimg=1, epochs=1, images_per_epoch=10), "one of them"),
])
def test_schedule_validation_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProgressiveSchedule(**kwargs)


def test_real_images_fade_like_generated_ones():
    images = torch.randn(2, 3, 32, 32)
    at16 = torch.nn.functional.avg_pool2d(images, 2)
    assert torch.allclose(fade_real(images, 16, 1.0), at16)
    # alpha = 0: the previous resolution, upsampled (what the generator shows at alpha 0)
    assert torch.allclose(fade_real(images, 16, 0.0), upsample2x(downsample2x(at16)))
    mid = fade_real(images, 16, 0.3)
    assert torch.allclose(mid, 0.7 * upsample2x(downsample2x(at16)) + 0.3 * at16, atol=1e-6)


def _t2f_run(tmp_path: Path, overrides: list[str] | None = None):
    cfg = compose_config(tmp_path, ["trainer.log_every_n_steps=1", *(overrides or [])], model="t2f")
    return cfg, train(cfg)


def _batches_that_reset(callback: ProgressiveGrowing, schedule: ProgressiveSchedule,
                        kimgs: list[float]) -> list[float]:
    """Runs the callback over batches at ``kimgs`` with one Adam step each, from an optimizer that
    already has state; the kimg of every batch that found that state cleared."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param])
    trainer = SimpleNamespace(optimizers=[optimizer], datamodule=None)
    module = SimpleNamespace(schedule=schedule, kimg=kimgs[0], stage=0, alpha=1.0)
    param.grad = torch.ones(1)
    optimizer.step()  # state as a run (or a resumed checkpoint) has it
    callback.on_fit_start(trainer, module)
    resets = []
    for kimg in kimgs:
        module.kimg = kimg
        callback.on_train_batch_start(trainer, module, None, 0)
        if not optimizer.state:
            resets.append(kimg)
        optimizer.step()
    return resets


def test_reset_optimizer_clears_adam_state_as_each_fade_in_and_stable_phase_begins():
    # the official ProGAN/StyleGAN loops (reset_opt_for_new_lod): 8 px fades in over [1, 2) kimg,
    # is stable over [2, 3); 16 px fades in over [3, 4), is stable over [4, 5)
    kimgs = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    schedule = ProgressiveSchedule(16, kimg={4: 1, 8: 2, 16: 2}, fade_in_fraction=0.5, reset_optimizer=True)
    assert _batches_that_reset(ProgressiveGrowing(), schedule, kimgs) == [1.0, 2.0, 3.0, 4.0]
    kept = ProgressiveSchedule(16, kimg={4: 1, 8: 2, 16: 2}, fade_in_fraction=0.5)  # the default keeps it
    assert _batches_that_reset(ProgressiveGrowing(), kept, kimgs) == []
    # resumed after a batch at 2.5 kimg: no reset on resume, the next one where an unbroken run has it
    first = ProgressiveGrowing()
    _batches_that_reset(first, schedule, kimgs[:6])
    resumed = ProgressiveGrowing()
    resumed.load_state_dict(first.state_dict())
    assert _batches_that_reset(resumed, schedule, [2.5, 2.75, 3.0, 3.5]) == [3.0]
    fresh = ProgressiveGrowing()
    fresh.load_state_dict({"stage": 1, "resolution": 8, "alpha": 1.0})  # a checkpoint from before the option
    assert _batches_that_reset(fresh, schedule, [2.5, 3.0]) == [3.0]


def test_t2f_trains_across_every_stage_switch_with_per_stage_batch_sizes(tmp_path):
    cfg, metrics = _t2f_run(tmp_path, ["model.schedule.batch_size={4:8,16:4}",
                                       "model.text.lr_scale=0.25", "model.schedule.lr.4=0.004",
                                       "model.schedule.lr.32=0.002"])
    run = Path(cfg.paths.output_dir)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    grown = checkpoint_growth(ckpt)
    assert grown.stage == 3 and grown.alpha > 0.9  # in the last fade-in
    # the last stage's lr, the text encoder's group at its fraction of it
    g_groups, d_groups = (o["param_groups"] for o in ckpt["optimizer_states"])
    assert [g["lr"] for g in g_groups] == [0.002]
    assert [(g["lr"], g["lr_scale"]) for g in d_groups] == [(0.002, 1.0), (0.0005, 0.25)]
    assert ckpt["t2f"]["images_seen"] >= 80
    sizes = {p.stem.split("_")[-1] for p in (run / "samples").glob("*.png")}
    assert {"4px", "32px"} <= sizes
    # every batch as large as the stage its first image falls in (8 until 16 px, then 4), from one
    # loader: the images seen after each batch, as logged, step by exactly that
    seen = sorted({int(float(row["step"])) for row in csv.DictReader(open(next(run.rglob("metrics.csv"))))
                   if row.get("step") and row.get("loss/d")})
    schedule = instantiate(cfg.model.schedule)
    expected = [schedule.batch_size_at(before) or cfg.dataset.batch_size for before in [0, *seen[:-1]]]
    assert [after - before for before, after in zip([0, *seen[:-1]], seen)] == expected
    assert expected[0] == 8 and expected[-1] == 4
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert len(ckpt["SyntheticDataModule"]["vocab"]["tokens"]) > 20  # vocabulary travels along


def test_t2f_trains_in_bf16_mixed_precision(tmp_path):
    # Under autocast the generator's fakes and the caption embedding come out in bf16 while
    # the real images stay fp32: the gradient penalty's interpolation must still work.
    cfg, metrics = _t2f_run(tmp_path, ["trainer.precision=bf16-mixed", "trainer.max_steps=12"])
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint_growth(ckpt).stage == 2  # 6 batches of 8: grew past two stage switches
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert metrics["loss/d_gp"] > 0 and all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_resume_mid_fade_restores_stage_alpha_and_images_seen(tmp_path):
    # Stop inside the 8 px fade-in (stage 1 spans 0.016-0.032 kimg; the fade-in its first 85%).
    first, _ = _t2f_run(tmp_path / "a", ["trainer.max_steps=6"])  # 3 batches of 8 = 0.024 kimg
    ckpt_path = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt_path, weights_only=True)
    at_save = checkpoint_growth(saved)
    assert at_save.stage == 1 and 0.0 < at_save.alpha < 1.0

    seen = {}
    import pytorch_lightning as pl

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.setdefault("first", (module.images_seen, module.stage, module.alpha, batch["image"].shape))

    second = compose_config(tmp_path / "b", [f"ckpt_path={ckpt_path}"], model="t2f")
    train(second, extra_callbacks=[Probe()])
    images, stage, alpha, _ = seen["first"]
    expected = ProgressiveSchedule(32, {4: 0.016, 8: 0.016, 16: 0.024, 32: 0.024}).at(images / 1000)
    assert images == saved["t2f"]["images_seen"] == 24
    assert (stage, alpha) == (expected.stage, expected.alpha) == (at_save.stage, at_save.alpha)


@pytest.mark.slow
def test_t2f_ddp_cpu_two_processes_grow_across_stage_switches(tmp_path):
    from tests.conftest import TINY, TINY_MODEL
    from tests.helpers import run_cli

    run = tmp_path / "ddp"
    args = ["model=t2f", "trainer=ddp_cpu", *TINY, *TINY_MODEL["t2f"],
            f"paths.cache_dir={tmp_path.parent / 't2f-cache'}", f"hydra.run.dir={run}"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint_growth(ckpt).stage == 3  # grew 4 -> 32 px with 2 processes (16 images per batch)
    assert ckpt["t2f"]["images_seen"] >= 80
    assert {p.stem.split("_")[-1] for p in (run / "samples").glob("*.png")} >= {"4px", "32px"}


def test_checkpoint_of_a_retired_module_is_refused_with_one_line(tiny_checkpoint, tmp_path):
    """Checkpoints written before every model became a GANModule configuration describe other parts."""
    from t2f.checkpoints import build_module

    ckpt = torch.load(tiny_checkpoint("t2f"), weights_only=True)
    ckpt["t2f"]["config"]["model"] = {"_target_": "t2f.modules.t2f.T2FModule", "resolution": 32}
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with pytest.raises(ValueError, match=r"old.ckpt was written by an older t2f \(model._target_=t2f.modules.t2f."
                                         r"T2FModule.*python -m t2f.export"):
        build_module(torch.load(old, weights_only=True), old)


def test_resuming_a_run_of_a_retired_module_says_so(tmp_path):
    from t2f.preflight import check_resume
    from t2f.utils import ConfigError

    old = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "t2f": {"images_seen": 8, "config": {
        "model": {"_target_": "t2f.modules.stylegan.StyleGANModule"}, "dataset": {}}}}, old)
    cfg = compose_config(tmp_path, [], model="t2f")
    with pytest.raises(ConfigError, match=r"cannot resume: .*last.ckpt was written by an older t2f"):
        check_resume(str(old), cfg, None, None)


def test_parts_that_do_not_fit_are_named():
    from t2f.growth import ProgressiveSchedule
    from t2f.modules.gan import GANModule
    from t2f.modules.text import TextConditioner
    from t2f.nets.progan import ProGANDiscriminator
    from t2f.nets.stylegan import StyleGANGenerator

    g = StyleGANGenerator(4, 4, 16, mapping_layers=1, fmap_base=16, fmap_max=8)
    d = ProGANDiscriminator(16, fmap_base=16, fmap_max=8)
    with pytest.raises(ValueError, match="model.schedule grows to 32 px but model.generator is built for 16 px"):
        GANModule(g, d, schedule=ProgressiveSchedule(32, kimg=1))
    module = GANModule(g, d, total_kimg=1)  # no growth: the full resolution throughout
    assert module.resolution == 16 and module.stage is None
    text = TextConditioner(20, encoder={"hidden_dim": 8})
    conditional = StyleGANGenerator(4, 4, 16, mapping_layers=1, fmap_base=16, fmap_max=8, condition_dim=6)
    with pytest.raises(ValueError, match="model.generator reads caption embeddings of size 6 .* size is 8"):
        GANModule(conditional, ProGANDiscriminator(16, fmap_base=16, fmap_max=8, condition_dim=8), text=text,
                  total_kimg=1)
