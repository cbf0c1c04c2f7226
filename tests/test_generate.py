"""``python -m t2f.generate`` on tiny checkpoints: grids, truncation, style mixing, videos, timelapse."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from PIL import Image

from t2f.export import load_generator
from t2f.generate import (
    generate,
    mixing_layers,
    path_positions,
    quote_free_text,
    style_mixing_grid,
)
from t2f.video import timelapse_frames, write_video
from tests.conftest import REPO
from tests.helpers import CAPTION, generate_config

CELL = 64 + 2  # grid_image enlarges 32px faces to 64px, with 2px padding
pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "t2f.generate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def gif_frames(path: Path) -> int:
    with Image.open(path) as image:
        return image.n_frames


def mp4_frames(path: Path) -> int:
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.slow
def test_cli_writes_captioned_grid_and_names_unknown_words(tiny_checkpoint, tmp_path: Path) -> None:
    out = tmp_path / "faces.png"
    result = cli(f"ckpt={tiny_checkpoint('t2f')}", "text=a smiling woman, with long red hair (zzyzx)", "n=4",
                 "seed=0", "psi=0.7", f"out={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Wrote {out}" in result.stdout
    assert "zzyzx" in result.stderr and "<unk>" in result.stderr  # named in the warning
    picture = Image.open(out)
    assert picture.height == 2 * CELL + 2 and picture.width > 2 * CELL + 2  # 2x2 faces + the caption
    assert not list(tmp_path.glob("outputs"))  # writes nothing else

    bad = cli(f"ckpt={tiny_checkpoint('t2f')}", f"text={CAPTION}", "psi=2", cwd=tmp_path)
    assert bad.returncode == 1 and "psi=2 must be a number in [0, 1]" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("name", ["t2f", "stylegan", "stylegan_text", "dcgan", "gan_int_cls"])
def test_same_seed_same_faces_other_seed_other_faces(tiny_checkpoint, name: str) -> None:
    texts = [CAPTION, "a man with a beard"] if name in ("t2f", "stylegan_text", "gan_int_cls") else None
    first = load_generator(tiny_checkpoint(name)).generate(texts, n=3, seed=7, psi=0.7)
    generator = load_generator(tiny_checkpoint(name))
    assert first.shape == (3 * len(texts or [0]), 3, 32, 32)
    assert first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, generator.generate(texts, n=3, seed=7, psi=0.7))
    assert not torch.equal(first, generator.generate(texts, n=3, seed=8, psi=0.7))


def test_default_output_next_to_the_run_is_reproducible(tiny_checkpoint) -> None:
    ckpt = tiny_checkpoint("stylegan_text")
    paths = [generate(generate_config(ckpt=str(ckpt), text=CAPTION, n=4, psi=0.5)) for _ in range(2)]
    assert paths[0] == ckpt.parent.parent / "generated" / "a_smiling_woman_with_long_red_hair_seed0_psi0.5.png"
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_psi_zero_is_the_average_latent(tiny_checkpoint) -> None:
    for name, texts in (("t2f", [CAPTION]), ("dcgan", None)):  # z -> psi z: every face the same
        images = load_generator(tiny_checkpoint(name)).generate(texts, n=3, seed=0, psi=0.0)
        assert torch.equal(images[0], images[1]) and torch.equal(images[0], images[2])
    stylegan = load_generator(tiny_checkpoint("stylegan"))
    z, _ = stylegan.latents(3, seed=0)
    ws = stylegan.styles(z, psi=0.0)  # w -> w_avg on the truncated layers (cutoff 8 = all of them here)
    assert torch.allclose(ws, stylegan.generator.w_avg.expand_as(ws))
    assert not torch.allclose(stylegan.styles(z, psi=1.0), ws)


def test_texts_file_gives_one_labelled_row_per_caption(tiny_checkpoint, tmp_path: Path) -> None:
    captions = tmp_path / "captions.txt"
    captions.write_text(f"{CAPTION}\n\na man with a beard and glasses\n  a woman, smiling  \n")
    path = generate(generate_config(ckpt=str(tiny_checkpoint("t2f")), texts_file=str(captions), n=2))
    picture = Image.open(path)
    assert path.name == "captions_seed0.png"
    assert picture.height == 3 * CELL + 2 and picture.width > 2 * CELL + 2 + 100  # rows of 2, labels beside


def test_unconditional_model_ignores_text_and_says_so(tiny_checkpoint, tmp_path: Path, capsys) -> None:
    path = generate(generate_config(ckpt=str(tiny_checkpoint("dcgan")), text=CAPTION, n=4, out=str(tmp_path / "d.png")))
    assert "unconditional: ignoring the caption" in capsys.readouterr().out
    assert Image.open(path).size == (2 * CELL + 2, 2 * CELL + 2)  # no label column


def test_style_mixing_grid_geometry_and_cells(tiny_checkpoint, tmp_path: Path) -> None:
    ckpt = tiny_checkpoint("stylegan")
    path = generate(generate_config(ckpt=str(ckpt), mode="mix", n=3, rows=2, mix="middle", out=str(tmp_path / "m.png")))
    assert Image.open(path).size == ((3 + 1) * CELL + 2, (2 + 1) * CELL + 2)

    gen = load_generator(ckpt)
    cells = style_mixing_grid(gen, n=3, rows=2, layers=[0, 1, 2, 3], seed=1).view(3, 4, 3, 32, 32)
    assert torch.equal(cells[0, 0], torch.ones(3, 32, 32))  # the blank corner
    z, noise = gen.latents(5, seed=1)
    ws = gen.styles(z)
    # The grid renders its 5 sources in one batch and its 6 cells in another; CPU kernels (oneDNN,
    # MKL, ARM) block other batch sizes differently, so re-rendering them in batches of 3 or 1
    # differs in the last bits (up to 1e-5 seen). A wrong face, noise or layer differs by ~1.
    assert_close = partial(torch.testing.assert_close, atol=1e-4, rtol=0)
    assert_close(cells[0, 1:], gen.render(ws[:3], [m[:3] for m in noise]))  # sources A on top
    assert_close(cells[1:, 0], gen.render(ws[3:], [m[3:] for m in noise]))  # sources B on the left
    mixed = ws[1:2].clone()
    mixed[:, :4] = ws[4, :4]  # row 2 (B_1), column 2 (A_1): coarse styles from B
    assert_close(cells[2, 2], gen.render(mixed, [m[1:2] for m in noise])[0])
    assert not torch.allclose(cells[2, 2], cells[0, 2], atol=1e-3)  # B's coarse styles changed A_1


def test_mixing_layer_groups() -> None:
    assert mixing_layers("coarse", 32) == [0, 1, 2, 3]
    assert mixing_layers("middle", 32) == [4, 5] and mixing_layers("fine", 32) == [6, 7]
    assert mixing_layers("middle", 128) == [4, 5, 6, 7] and mixing_layers("fine", 128) == [8, 9, 10, 11]
    assert mixing_layers("2-5", 32) == [2, 3, 4, 5] and mixing_layers(3, 32) == [3]
    for spec, resolution in (("middle", 16), ("8", 32), ("5-2", 32), ("pose", 32)):
        with pytest.raises(ValueError, match="selects no style layer"):
            mixing_layers(spec, resolution)


def test_mixing_needs_stylegan(tiny_checkpoint) -> None:
    with pytest.raises(ValueError, match="style mixing needs a StyleGAN checkpoint"):
        generate(generate_config(ckpt=str(tiny_checkpoint("dcgan")), mode="mix"))


def test_path_positions() -> None:
    assert path_positions(5, 3, loop=False) == [(0, 1, 0.0), (0, 1, 0.5), (1, 2, 0.0), (1, 2, 0.5), (1, 2, 1.0)]
    assert path_positions(6, 3, loop=True) == [(0, 1, 0.0), (0, 1, 0.5), (1, 2, 0.0), (1, 2, 0.5),
                                                (2, 0, 0.0), (2, 0, 0.5)]


def test_interpolation_videos_have_the_frames_asked_for(tiny_checkpoint, tmp_path: Path) -> None:
    gif = generate(generate_config(ckpt=str(tiny_checkpoint("stylegan")), mode="interpolate", frames=5, keyframes=3,
                          interp="lerp", out=str(tmp_path / "walk.gif")))
    assert gif_frames(gif) == 5
    pytest.importorskip("av")
    mp4 = generate(generate_config(ckpt=str(tiny_checkpoint("dcgan")), mode="interpolate", frames=7, n=1,
                          loop=False, out=str(tmp_path / "walk.mp4")))
    assert mp4.suffix == ".mp4" and mp4_frames(mp4) == 7
    text = generate(generate_config(ckpt=str(tiny_checkpoint("t2f")), mode="interpolate", frames=6, n=2,
                           text=CAPTION, text_to="a man with a beard"))
    assert text.name == "text_interpolation_seed0.mp4" and mp4_frames(text) == 6


def test_gif_fallback_without_pyav(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setattr("t2f.video.has_pyav", lambda: False)
    frames = [Image.new("RGB", (10, 10), (30 * i, 0, 0)) for i in range(4)]
    path = write_video(frames, tmp_path / "v.mp4", fps=10)
    assert path == tmp_path / "v.gif" and gif_frames(path) == 4
    assert "PyAV is not installed" in capsys.readouterr().out


def test_text_interpolation_needs_a_text_model(tiny_checkpoint) -> None:
    with pytest.raises(ValueError, match="text_to needs a text-conditional model"):
        generate(generate_config(ckpt=str(tiny_checkpoint("dcgan")), mode="interpolate", text="a", text_to="b"))


def test_timelapse_of_a_run(tiny_checkpoint, tmp_path: Path) -> None:
    run = tiny_checkpoint("t2f").parent.parent
    grids = sorted((run / "samples").glob("kimg*px.png"))
    assert len({p.name.split("_")[1] for p in grids}) > 1  # grids at several resolutions
    out = generate(generate_config(mode="timelapse", run=str(run), out=str(tmp_path / "t.gif")))
    assert gif_frames(out) == len(grids)


def test_timelapse_orders_by_kimg_and_upscales(tmp_path: Path) -> None:
    samples = tmp_path / "run" / "samples"
    samples.mkdir(parents=True)
    for kimg, res, side, colour in ((10.0, 32, 40, "blue"), (0.0, 8, 10, "red"), (2.5, 16, 20, "green")):
        Image.new("RGB", (side, side), colour).save(samples / f"kimg{kimg:010.3f}_{res}px.png")
    (samples / "notes.png").touch()  # not a sample grid: ignored
    frames = timelapse_frames(tmp_path / "run", label=False)
    assert [f.size for f in frames] == [(40, 40)] * 3
    assert [f.getpixel((20, 20)) for f in frames] == [(255, 0, 0), (0, 128, 0), (0, 0, 255)]
    assert frames[0].getpixel((0, 0)) == (255, 0, 0)  # nearest upscaling fills the frame
    labelled = timelapse_frames(tmp_path / "run")
    assert labelled[0].height > 40


def test_free_text_is_quoted_for_hydra() -> None:
    texts = ["a man, smiling", "a woman's face (happy) [x]", "ends with \\", "it's 'quoted'"]
    argv = quote_free_text(["prog", *[f"text={t}" for t in texts], "text_to='kept'", "n=3"])
    assert argv[0] == "prog" and argv[-1] == "n=3"
    parsed = OverridesParser.create().parse_overrides(argv[1:-1])
    assert [o.value() for o in parsed] == [*texts, "kept"]


@pytest.mark.parametrize("values, error, match", [
    ({"ckpt": "missing.ckpt"}, FileNotFoundError, "does not exist"),
    ({"psi": -0.1}, ValueError, r"psi=-0.1 must be a number in \[0, 1\]"),
    ({"psi": 1.5}, ValueError, "psi=1.5 must be"),
    ({"psi": "abc"}, ValueError, "psi='abc' must be"),
    ({"text": "  "}, ValueError, "text is empty"),
    ({"text": "?!"}, ValueError, "contains no words"),
    ({"n": 0}, ValueError, "n=0 must be a whole number >= 1"),
    ({"text": None}, ValueError, "text-conditional: give text="),
    ({"mode": "video"}, ValueError, "mode=video is not one of"),
    ({"mode": "interpolate", "frames": 1}, ValueError, "frames=1 must be >= 2"),
    ({"mode": "timelapse", "ckpt": None}, ValueError, "needs run=RUN_DIR"),
])
def test_clear_errors(tiny_checkpoint, values: dict, error: type, match: str) -> None:
    base = {"ckpt": str(tiny_checkpoint("t2f")), "text": CAPTION}
    with pytest.raises(error, match=match):
        generate(generate_config(**{**base, **values}))


def test_bad_checkpoints_and_caption_files(tiny_checkpoint, tmp_path: Path) -> None:
    text_file = tmp_path / "notes.ckpt"
    text_file.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is not a checkpoint written by t2f"):
        generate(generate_config(ckpt=str(text_file)))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="holds no run config"):
        generate(generate_config(ckpt=str(foreign)))
    ckpt = torch.load(tiny_checkpoint("dcgan"), weights_only=True)
    ckpt["t2f"]["config"]["model"]["generator"]["width"] = 12  # a config that does not match the weights
    torch.save(ckpt, tmp_path / "mismatch.ckpt")
    with pytest.raises(ValueError, match="the weights do not fit the model"):
        generate(generate_config(ckpt=str(tmp_path / "mismatch.ckpt")))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no captions"):
        generate(generate_config(ckpt=str(tiny_checkpoint("t2f")), texts_file=str(empty)))


def test_the_package_loads_any_generator_and_knows_its_version(tiny_checkpoint, tmp_path: Path) -> None:
    import configparser

    import t2f
    from t2f import load_generator
    from t2f.export import export

    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    assert t2f.__version__ in (setup["metadata"]["version"], "0+unknown")
    ckpt = tiny_checkpoint("dcgan")
    exported = export(ckpt, tmp_path / "g.pt")
    a, b = load_generator(ckpt), load_generator(exported)
    assert torch.equal(a.generate(n=2, seed=5), b.generate(n=2, seed=5))
