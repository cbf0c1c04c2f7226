"""End-to-end: the real config, composed and shrunk, trains, saves, resumes and sweeps."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from t2f.conf import CONFIG_DIR
from t2f.precision import explain_precision, resolve_precision
from t2f.train import train
from t2f.utils import unwrap_instantiation
from tests.conftest import compose_config
from tests.helpers import cli_tiny, finite_losses, run_cli

GROUP_OPTIONS = {
    "model": ["dcgan", "gan_int_cls", "stylegan", "stylegan_text", "t2f"],
    "model/text": ["lstm"],
    "model/text/word_reader": ["progan"],
    "dataset": ["synthetic", "celeba", "face2text", "folder"],
    "trainer": ["default", "cpu", "gpu", "ddp", "ddp_cpu", "debug"],
    "logger": ["wandb", "tensorboard", "csv", "none"],
    "callbacks": ["default"],
    "metrics": ["none", "swd", "fid", "alignment", "diversity"],
    "experiment": ["dcgan_synthetic64", "stylegan_celeba128", "t2f_celeba32", "t2f_original"],
    "hparams_search": ["optuna"],
}


def test_every_group_option_has_a_test_and_composes(tmp_path):
    for group, options in GROUP_OPTIONS.items():
        on_disk = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        assert sorted(options) == on_disk, f"conf/{group} has options this test does not cover"
        for option in options:
            extra = [f"dataset.root={tmp_path}"] if group in ("dataset", "experiment") else []
            model = "t2f" if group.startswith("model/text") else "dcgan"  # the text groups live inside a text model
            if group == "experiment":
                model = option.split("_")[0]  # an experiment's own model: a model= given with it would win
            cfg = compose_config(tmp_path, [f"{group}={option}", *extra], model=model, tiny=False)
            with open_dict(cfg):
                if cfg.model.text is not None:
                    cfg.model.text.vocab_size = 40  # train() fills it in from the dataset
            OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
            assert cfg.model._target_ == "t2f.modules.gan.GANModule"
            assert cfg.trainer._target_ == "pytorch_lightning.Trainer"


def test_experiment_overrides_defaults(tmp_path):
    cfg = compose_config(tmp_path, ["experiment=dcgan_synthetic64"], tiny=False)
    assert cfg.dataset.resolution == 64 and cfg.model.generator.resolution == 64
    assert cfg.model.loss.name == "wgan_gp" and cfg.model.discriminator.norm == "layer"
    original = compose_config(tmp_path, ["experiment=t2f_original", "dataset.root=/x"], model="t2f", tiny=False)
    assert original.dataset._target_.endswith("Face2TextDataModule")
    assert original.dataset.batch_size == 16 and original.model.optimizer_g.lr == 0.001
    from t2f.growth import ProgressiveSchedule

    schedule = {**original.model.schedule, "images_per_epoch": 1000}  # 160 epochs of 1000 images
    del schedule["_target_"]
    assert ProgressiveSchedule(**schedule).kimg_per_stage == [160, 80, 40, 20, 10]  # as published
    real = compose_config(tmp_path, ["experiment=t2f_celeba32", "dataset.root=/x"], model="t2f", tiny=False)
    assert real.model.loss.mode_seeking == 1.0 and real.model.text.mismatch == "none"
    words = real.model.text.word_prediction
    assert words.image == 1.0 and words.image_target == "twin" and real.model.text.contrastive.weight == 0.25
    assert words.balance == 0.5
    assert real.model.text.word_reader._target_.endswith("ProGANDiscriminator")  # the word heads' own network
    assert real.model.text.word_reader.max_resolution == 32
    without = compose_config(tmp_path, ["experiment=t2f_celeba32", "dataset.root=/x", "model.text.word_reader=null"],
                             model="t2f", tiny=False)
    assert without.model.text.word_reader is None
    schedule = {**real.model.schedule}
    del schedule["_target_"]
    flat = ProgressiveSchedule(**schedule)
    assert flat.resolutions == [32] and flat.total_kimg == 114  # no growth, the default budget


def test_t2f_trains_with_the_projection_critic_and_names_a_bad_choice(tmp_path):
    cfg = compose_config(tmp_path / "a", ["model.discriminator.conditioning=projection", "trainer.max_steps=4",
                                          "+logger.csv.flush_logs_every_n_steps=1", "trainer.log_every_n_steps=1"],
                         model="t2f")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert "discriminator.blocks.0.condition_embed.weight" in state
    assert not any("condition_proj" in name for name in state)
    finite_losses(run)
    bad = compose_config(tmp_path / "b", ["model.discriminator.conditioning=film"], model="t2f")
    with pytest.raises(Exception) as raised:  # the CLI prints the constructor's own line (t2f.cli)
        train(bad)
    assert str(unwrap_instantiation(raised.value)) == ("model.discriminator.conditioning='film': choose one of "
                                                       "concat, projection")


def test_t2f_config_sets_the_critic_caption_width_and_the_mismatch_weight(tmp_path):
    from hydra.utils import instantiate

    cfg = compose_config(tmp_path, ["model.discriminator.condition_channels=8", "model.text.mismatch=nearest",
                                    "model.text.mismatch_weight=0.2"], model="t2f")
    critic = instantiate(cfg.model.discriminator)
    assert critic.condition_channels == 8 and critic.blocks[0].condition_proj.weight.shape[0] == 8
    assert instantiate(cfg.model.text, vocab_size=20).mismatch_weight == 0.2
    default = instantiate(compose_config(tmp_path / "d", [], model="t2f").model.discriminator)
    assert default.condition_channels == max(1, default.channels[0] // 4)


@pytest.mark.parametrize("loss", ["nonsaturating", "hinge", "wgan_gp"])
def test_short_dcgan_training_writes_run_directory(tmp_path, loss):
    extra = ["model.discriminator.norm=layer"] if loss == "wgan_gp" else []
    cfg = compose_config(tmp_path, [f"model.loss.name={loss}", "+logger.csv.flush_logs_every_n_steps=1",
                                    "trainer.log_every_n_steps=1", *extra])
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    grids = sorted((run / "samples").glob("*.png"))
    assert len(grids) >= 2  # at start and at the end
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.model.loss.name == loss and saved.seed == cfg.seed
    finite_losses(run)
    assert metrics["kimg"] == pytest.approx(0.04, abs=0.008)


def test_training_stops_at_total_kimg_and_max_steps_caps(tmp_path):
    cfg = compose_config(tmp_path, ["trainer.max_steps=4"])
    train(cfg)
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4  # 2 batches x (D step + G step)
    assert ckpt["t2f"]["images_seen"] == 16


def test_resume_restores_counters_weights_optimizer_ema_and_rng(tmp_path):
    first = compose_config(tmp_path / "a")
    train(first)
    ckpt_path = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt_path, weights_only=True)
    assert saved["t2f"]["images_seen"] == 40
    assert any(k.startswith("generator_ema.") for k in saved["state_dict"])

    seen = {}

    class Probe(__import__("pytorch_lightning").Callback):
        def on_train_start(self, trainer, module):
            seen["images"] = module.images_seen
            seen["state"] = {k: v.clone() for k, v in module.state_dict().items()}
            seen["opt"] = copy.deepcopy([o.state_dict() for o in trainer.optimizers])

        def on_fit_start(self, trainer, module):  # runs right after RankSeed restored the RNG
            seen["rng"] = torch.get_rng_state().clone()

    second = compose_config(tmp_path / "b", [f"ckpt_path={ckpt_path}", "model.total_kimg=0.064"])
    train(second, extra_callbacks=[Probe()])

    assert seen["images"] == 40
    for key, value in saved["state_dict"].items():
        assert torch.equal(seen["state"][key], value), key
    for restored, stored in zip(seen["opt"], saved["optimizer_states"]):
        for pid, state in stored["state"].items():
            assert torch.equal(restored["state"][pid]["exp_avg"], state["exp_avg"])
    assert torch.equal(seen["rng"], saved["callbacks"]["RankSeed"]["rank_states"][0]["torch"])
    resumed = torch.load(Path(second.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["t2f"]["images_seen"] == 64  # continued from 40, not from 0


def test_rank_seeds_differ_per_rank_and_are_reproducible():
    from t2f.callbacks.rng import seed_rank

    seed_rank(3, 0)
    a = torch.randn(4)
    seed_rank(3, 1)
    b = torch.randn(4)
    seed_rank(3, 0)
    assert torch.equal(a, torch.randn(4)) and not torch.equal(a, b)


def test_bad_resolution_says_what_is_wrong(tmp_path):
    cfg = compose_config(tmp_path, ["dataset.resolution=30"])
    with pytest.raises(Exception, match="dataset.resolution=30 is not a power of two"):
        train(cfg)


def test_missing_checkpoint_is_explained(tmp_path):
    cfg = compose_config(tmp_path, ["ckpt_path=/nonexistent/last.ckpt"])
    with pytest.raises(Exception, match="ckpt_path=/nonexistent/last.ckpt does not exist"):
        train(cfg)


def test_wgan_gp_with_batchnorm_critic_is_refused(tmp_path):
    cfg = compose_config(tmp_path, ["model.loss.name=wgan_gp", "model.discriminator.norm=batch"])
    with pytest.raises(Exception, match="set model.discriminator.norm=layer"):
        train(cfg)


# --- through the command line ------------------------------------------------------------

def test_unknown_model_lists_the_choices(tmp_path):
    result = run_cli(["model=nosuchmodel"], tmp_path, timeout=60)
    assert result.returncode != 0
    assert "nosuchmodel" in result.stderr and "dcgan" in result.stderr


@pytest.mark.slow
def test_multirun_makes_two_runs_each_with_its_own_wandb_run(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=1,2", "trainer.max_steps=2", *cli_tiny(tmp_path), "logger=wandb",
            f"hydra.sweep.dir={sweep}"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LeafSpec" not in result.stderr  # a dependency's deprecation notice, filtered in t2f.train
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "checkpoints").exists())
    assert len(jobs) == 2
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1
    seeds = {OmegaConf.load(job / "config.yaml").seed for job in jobs}
    assert seeds == {1, 2}


@pytest.mark.slow
def test_ddp_cpu_two_processes_train_and_seed_noise_per_rank(tmp_path):
    run = tmp_path / "ddp"
    args = ["trainer=ddp_cpu", "trainer.max_steps=6", *cli_tiny(tmp_path), f"hydra.run.dir={run}"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Run directory: {run}" in result.stdout
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["t2f"]["images_seen"] == 3 * 8 * 2  # 3 batches of 8 on each of 2 ranks
    states = ckpt["callbacks"]["RankSeed"]["rank_states"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])


@pytest.mark.parametrize(("accelerator", "amx", "flags", "expected", "reason"), [
    ("cpu", True, "fpu avx2", "bf16-mixed", "AMX"),
    ("cpu", False, "fpu avx2 avx512f avx512_bf16", "bf16-mixed", "AVX-512 BF16"),
    ("cpu", False, "fpu avx2 avx512f", "32-true", "neither"),
    ("gpu", True, "fpu avx512_bf16", "32-true", "GPU")])
def test_auto_precision_is_bf16_only_on_cpus_with_a_fast_bf16_path(monkeypatch, tmp_path, accelerator, amx, flags,
                                                                     expected, reason):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    monkeypatch.setattr("t2f.precision.CPUINFO", str(cpuinfo))
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_precision("auto", accelerator) == expected
    assert resolve_precision("16-mixed", accelerator) == "16-mixed"  # a set value is kept
    value, why = explain_precision("auto", accelerator)
    assert value == expected and reason in why
    assert explain_precision("16-mixed", accelerator) == ("16-mixed", "set by trainer.precision")
    monkeypatch.setattr("t2f.precision.CPUINFO", str(tmp_path / "missing"))  # not Linux: no flags to read
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision("auto", "cpu") == "32-true"


def test_channels_last_trains_exactly_like_contiguous_layout(tmp_path, one_thread):
    # The layout is a speed choice only: the same seed gives the same weights after a few steps.
    weights = []
    for layout in ("true", "false"):
        cfg = compose_config(tmp_path / layout, [f"model.channels_last={layout}", "trainer.precision=32-true",
                                                 "trainer.max_steps=6"], model="t2f")
        train(cfg)
        ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
        weights.append(ckpt["state_dict"])
    conv = "discriminator.blocks.0.conv.weight"
    assert weights[0][conv].is_contiguous(memory_format=torch.channels_last)
    assert weights[1][conv].is_contiguous()
    for name, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][name], rtol=1e-4, atol=1e-5, msg=name)


def test_wandb_goes_online_only_with_credentials_and_never_prompts(tmp_path):
    from t2f.loggers import wandb_mode

    home = {"HOME": str(tmp_path)}
    assert wandb_mode(home) == "offline"  # no key, no ~/.netrc: offline, no login prompt
    assert wandb_mode({**home, "WANDB_API_KEY": "k" * 40}) == "online"
    assert wandb_mode({**home, "WANDB_API_KEY": "k" * 40, "WANDB_MODE": "disabled"}) == "disabled"  # the user's
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "p" * 40 + "\n")
    assert wandb_mode(home) == "online"  # what `wandb login` writes
    assert wandb_mode({**home, "WANDB_BASE_URL": "https://wandb.example.org"}) == "offline"  # another host
    (tmp_path / ".netrc").write_text("this is not a netrc file")
    assert wandb_mode(home) == "offline"


def test_each_grid_is_saved_and_logged_once(tmp_path):
    from t2f.callbacks.samples import SampleGrid

    grid = SampleGrid(str(tmp_path / "again"), every_kimg=0.032, num_samples=4)
    saved: list[str] = []
    grid.save = lambda trainer, module: saved.append(module.images_seen)  # type: ignore[method-assign]
    module = SimpleNamespace(images_seen=64)
    grid._saved_at = 64
    grid.on_train_end(None, module)  # the last batch saved this grid: the end saves nothing more
    grid._saved_at = 32
    grid.on_train_end(None, module)
    assert saved == [64]


def test_every_wandb_panel_uses_kimg_as_its_x_axis(tmp_path):
    from pytorch_lightning.loggers import WandbLogger

    from t2f.loggers import use_kimg_axis

    calls: list[tuple] = []

    class Recorder:
        def define_metric(self, name, **kwargs):
            calls.append((name, kwargs))

    class Logger(WandbLogger):
        @property
        def experiment(self):
            return Recorder()

    use_kimg_axis([Logger(save_dir=str(tmp_path), offline=True), object()])
    assert ("*", {"step_metric": "kimg", "step_sync": True}) in calls and calls[0][0] == "kimg"


def test_the_plan_is_a_wandb_table(tmp_path):
    from pytorch_lightning.loggers import WandbLogger

    from t2f.callbacks.plan import PLAN_HEADER, log_plan_table

    tables: list[dict] = []

    class Logger(WandbLogger):
        def log_table(self, key, columns=None, data=None, **kwargs):
            tables.append({"key": key, "columns": columns, "data": data})

    rows = [("4px", "0", "0", "6", "32", "0.01"), ("8px", "6", "10.2", "1.8", "32", "0.01")]
    log_plan_table([Logger(save_dir=str(tmp_path), offline=True), object()], rows)
    assert tables == [{"key": "plan", "columns": list(PLAN_HEADER), "data": [list(r) for r in rows]}]
