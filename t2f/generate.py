"""Look at faces: ``python -m t2f.generate ckpt=PATH text="a smiling woman with long red hair" n=16``.

One command per way of looking (``mode=``, options in conf/generate.yaml):

* ``grid`` (default): a PNG grid; ``texts_file=FILE`` gives one row per caption (the caption
  printed beside it, the same latents in every row). Unconditional models ignore captions.
* ``mix``: StyleGAN's style-mixing figure: source A faces across the top, source B faces down
  the left, each cell A's styles with B's on the layers ``mix=coarse|middle|fine|a-b``.
* ``interpolate``: a video walking through ``keyframes`` latents (slerp or lerp, looping),
  or from ``text`` to ``text_to`` with fixed latents (text models).
* ``timelapse``: the run's fixed-latent sample grids over its life (``run=RUN_DIR``).

Every mode samples through :class:`t2f.export.StandaloneGenerator` (the EMA generator at the
checkpoint's stage and alpha), so ``ckpt`` may also be a file written by ``python -m t2f.export``.
``psi`` is the truncation (see :mod:`t2f.export`); all randomness comes from ``seed``.
"""

from __future__ import annotations

import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor

from t2f.checkpoints import resolve_device, user_errors
from t2f.export import StandaloneGenerator, check_count, check_psi, load_generator
from t2f.grids import grid_image
from t2f.utils import check_output_file, read_utf8
from t2f.video import timelapse_frames, write_video

__all__ = ["free_text", "generate", "interpolation_frames", "mixing_layers", "read_captions",
           "style_mixing_grid"]

MODES = ("grid", "mix", "interpolate", "timelapse")
DEFAULT_N = {"grid": 16, "mix": 5, "interpolate": 4}
EXAMPLE_OUT = {"grid": "samples.png", "mix": "mix.png", "interpolate": "interpolation.mp4"}
FREE_TEXT_KEYS = ("text", "text_to")


# --- inputs ---------------------------------------------------------------------------------
def free_text(cfg: DictConfig, key: str) -> Any:
    """``cfg[key]`` exactly as typed: a caption is free text, so ``${...}`` in it stays literal
    instead of being resolved by OmegaConf (``${oc.env:VAR}`` would put VAR's value into the
    picture's label and file name)."""
    return OmegaConf.to_container(cfg, resolve=False).get(key)


def read_captions(text: str | None = None, texts_file: str | os.PathLike | None = None) -> list[str]:
    """Captions from ``text`` or from a file of one caption per line (blank lines skipped)."""
    if text is not None and texts_file is not None:
        raise ValueError("give text=... or texts_file=..., not both")
    if texts_file is not None:
        path = Path(texts_file).expanduser()
        if not path.exists() or path.is_dir():
            raise FileNotFoundError(f"texts_file={path} does not exist (a text file, one caption per line)")
        captions = [line.strip() for line in read_utf8(path).splitlines() if line.strip()]
        if not captions:
            raise ValueError(f"texts_file={path} holds no captions: write one caption per line")
        return captions
    if text is None:
        return []
    if not str(text).strip():
        raise ValueError('text is empty: give a caption, e.g. text="a smiling woman with long red hair"')
    return [str(text).strip()]


def _conditioning(gen: StandaloneGenerator, captions: list[str]) -> list[str]:
    """The captions a model uses: none for unconditional ones (saying so), at least one otherwise."""
    if not gen.conditional:
        if captions:
            print(f"This {gen.model} model is unconditional: ignoring the caption(s).")
        return []
    if not captions:
        raise ValueError(f"this {gen.model} model is text-conditional: give text=\"...\" or texts_file=FILE")
    return captions


# --- grids ----------------------------------------------------------------------------------
def caption_grid(gen: StandaloneGenerator, captions: list[str], n: int, seed: int = 0, psi: float = 1.0,
                 nrow: int | None = None) -> Image.Image:
    """``n`` faces per caption: one row per caption (labelled), or a square grid for one caption
    or an unconditional model."""
    captions = _conditioning(gen, captions)
    images = gen.generate(captions, n=check_count(n), seed=seed, psi=psi)
    if len(captions) > 1:
        return grid_image(images, n, captions)
    nrow = _nrow(nrow, n)
    labels = [captions[0]] + [""] * (math.ceil(n / nrow) - 1) if captions else None
    return grid_image(images, nrow, labels)


def mixing_layers(spec: Any, resolution: int) -> list[int]:
    """Style layers for ``mix``: ``coarse`` (4-8 px), ``middle`` (16-32 px), ``fine`` (64 px and
    up) as in the StyleGAN paper; below 64 px, ``fine`` is the last resolution and ``middle``
    what lies between. Or a range of layer indices ``a-b`` (inclusive) or one index."""
    resolutions = [4 * 2**k for k in range(int(math.log2(resolution)) - 1)]
    fine_from = min(64, resolution)
    groups = {
        "coarse": [r for r in resolutions if r <= 8],
        "middle": [r for r in resolutions if 8 < r < fine_from],
        "fine": [r for r in resolutions if r >= fine_from and r > 8],
    }
    count = 2 * len(resolutions)
    spec = str(spec).strip()
    if spec in groups:
        layers = [2 * k + j for k, r in enumerate(resolutions) if r in groups[spec] for j in (0, 1)]
    elif match := re.fullmatch(r"(\d+)(?:-(\d+))?", spec):
        first, last = int(match[1]), int(match[2] or match[1])
        layers = list(range(first, last + 1)) if first <= last < count else []
    else:
        layers = []
    if not layers:
        names = ", ".join(f"{k} (layers {_span(v, resolutions)})" for k, v in groups.items() if v)
        raise ValueError(f"mix={spec} selects no style layer of this {resolution}px model ({count} layers, "
                         f"0-{count - 1}): choose {names}, or a range such as mix=0-{min(3, count - 1)}")
    return layers


def _span(group: list[int], resolutions: list[int]) -> str:
    first, last = resolutions.index(group[0]), resolutions.index(group[-1])
    return f"{2 * first}-{2 * last + 1}"


def _require_stylegan(gen: StandaloneGenerator) -> None:
    if not gen.mixes_styles:
        raise ValueError(f"style mixing needs a StyleGAN checkpoint; this one is a {gen.model} model")


def style_mixing_grid(gen: StandaloneGenerator, n: int, rows: int, layers: list[int], seed: int = 0,
                      psi: float = 1.0, caption: str | None = None) -> Tensor:
    """The paper's figure as ``(rows + 1) * (n + 1)`` images, row-major: a blank corner, ``n``
    source A faces on top, ``rows`` source B faces on the left; cell (i, j) has A_j's styles
    and noise except on ``layers``, which take B_i's styles."""
    _require_stylegan(gen)
    n, rows = check_count(n), check_count(rows, "rows")
    z, noise = gen.latents(n + rows, seed)
    captions = _conditioning(gen, [caption] if caption else [])
    embedding = gen.embed(captions).expand(n + rows, -1) if captions else None
    ws = gen.styles(z, embedding, psi)
    sources = gen.render(ws, noise)
    a, b = slice(0, n), slice(n, n + rows)
    mixed = ws[a].unsqueeze(0).repeat(rows, 1, 1, 1)  # (rows, n, layers, w_dim)
    mixed[:, :, layers] = ws[b][:, None, layers]
    cells = gen.render(mixed.flatten(0, 1), [m[a].repeat(rows, 1, 1, 1) for m in noise])
    corner = torch.ones_like(sources[:1])  # white
    grid = [corner, sources[a]]
    for i in range(rows):
        grid += [sources[n + i : n + i + 1], cells[i * n : (i + 1) * n]]
    return torch.cat(grid)


# --- interpolation --------------------------------------------------------------------------
def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation along the last dimension (linear where a and b are parallel)."""
    a_unit, b_unit = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_unit * b_unit).sum(-1, keepdim=True).clamp(-1, 1))
    sin = torch.sin(omega)
    safe = sin.abs() > 1e-6
    wa = torch.where(safe, torch.sin((1 - t) * omega) / sin.where(safe, 1), 1 - t)
    wb = torch.where(safe, torch.sin(t * omega) / sin.where(safe, 1), t)
    return wa * a + wb * b


def path_positions(frames: int, keys: int, loop: bool) -> list[tuple[int, int, float]]:
    """``(from key, to key, t)`` per frame, evenly spaced over the path through ``keys`` keyframes
    (back to the first when ``loop``, so the video repeats seamlessly)."""
    if check_count(frames, "frames") < 2:
        raise ValueError(f"frames={frames} must be >= 2")
    segments = keys if loop else keys - 1
    span = frames if loop else frames - 1
    out = []
    for f in range(frames):
        u = f * segments / span
        i = min(int(u), segments - 1)
        out.append((i % keys, (i + 1) % keys, u - i))
    return out


def interpolation_frames(gen: StandaloneGenerator, n: int, frames: int, seed: int = 0, psi: float = 1.0,
                         keyframes: int = 3, interp: str = "slerp", loop: bool = True,
                         caption: str | None = None, caption_to: str | None = None) -> list[Tensor]:
    """``frames`` batches of ``n`` images. Without ``caption_to``: the latents walk through
    ``keyframes`` random keyframes (``slerp`` or ``lerp``), the caption (if any) fixed. With it:
    the latents stay fixed and the caption embedding moves linearly from ``caption`` to
    ``caption_to``. StyleGAN's noise (T2F's augmentation draws) stays fixed throughout."""
    if interp not in ("slerp", "lerp"):
        raise ValueError(f"interp={interp} must be slerp or lerp")
    n = check_count(n)
    if caption_to is not None:
        if not gen.conditional:
            raise ValueError(f"text_to needs a text-conditional model (T2F, or StyleGAN with "
                             f"model=stylegan_text); this {gen.model} model is unconditional")
        if caption is None:
            raise ValueError('text_to needs text: interpolate from text="..." to text_to="..."')
        z, noise = gen.latents(n, seed)
        ends = gen.embed([caption, caption_to])
        return [gen.synthesize(z, torch.lerp(ends[i], ends[j], t).expand(n, -1), psi, noise)
                for i, j, t in path_positions(frames, 2, loop)]
    if check_count(keyframes, "keyframes") < 2:
        raise ValueError(f"keyframes={keyframes} must be >= 2")
    captions = _conditioning(gen, [caption] if caption else [])
    embedding = gen.embed(captions).expand(n, -1) if captions else None
    z, noise = gen.latents(n, seed, keyframes=keyframes)
    keys = z.view(keyframes, n, -1)
    mix = slerp if interp == "slerp" else torch.lerp
    return [gen.synthesize(mix(keys[i], keys[j], t), embedding, psi, noise)
            for i, j, t in path_positions(frames, keyframes, loop)]


# --- the command ----------------------------------------------------------------------------
def _out_dir(ckpt: str) -> Path:
    """``<run>/generated`` for ``<run>/checkpoints/x.ckpt``, else ``generated/`` beside the file."""
    path = Path(ckpt).expanduser().resolve()
    base = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return base / "generated"


def _slug(text: str, limit: int = 48) -> str:
    return "_".join(re.findall(r"[a-z0-9]+", text.lower()))[:limit].rstrip("_") or "caption"


def generate(cfg: DictConfig) -> Path:
    """Run one command of ``cfg`` (conf/generate.yaml); returns the file written."""
    mode = str(cfg.mode)
    if mode not in MODES:
        raise ValueError(f"mode={mode} is not one of {', '.join(MODES)}")
    if mode == "timelapse":
        return _timelapse(cfg)
    if not cfg.get("ckpt"):
        raise ValueError("give ckpt=PATH: a training checkpoint (<run>/checkpoints/last.ckpt) or an exported generator")
    psi, seed = check_psi(cfg.psi), int(cfg.seed)
    n = check_count(cfg.n if cfg.get("n") is not None else DEFAULT_N[mode])
    captions = read_captions(free_text(cfg, "text"), cfg.get("texts_file"))
    if mode != "grid" and len(captions) > 1:
        raise ValueError(f"mode={mode} takes one caption (text=...), not a texts_file")
    caption = captions[0] if captions else None
    out = check_output_file(cfg.out, example=EXAMPLE_OUT[mode]) if cfg.get("out") else None
    gen = load_generator(cfg.ckpt, resolve_device(str(cfg.device)))
    print(f"{gen.model} generator at {gen.resolution}px (kimg {gen.source.get('kimg', 0):.3f}), seed {seed}, psi {psi:g}")
    tag = f"seed{seed}" + (f"_psi{psi:g}" if psi < 1 else "")

    if mode == "grid":
        stem = "samples" if not gen.conditional else (
            Path(cfg.texts_file).stem if cfg.get("texts_file") else _slug(caption or ""))
        path = _output(out, cfg.ckpt, f"{stem}_{tag}.png")
        return _save(caption_grid(gen, captions, n, seed, psi, cfg.get("nrow")), path)
    if mode == "mix":
        _require_stylegan(gen)
        layers = mixing_layers(cfg.mix, gen.resolution)
        path = _output(out, cfg.ckpt, f"mix_{cfg.mix}_{tag}.png")
        print(f"mix={cfg.mix}: style layers {layers} from the left column (source B), the rest from the top row (A)")
        cells = style_mixing_grid(gen, n, cfg.rows, layers, seed, psi, caption)
        return _save(grid_image(cells, n + 1), path)
    text_to = free_text(cfg, "text_to")
    text_to = None if text_to is None else read_captions(text_to)[0]
    path = _output(out, cfg.ckpt, f"{'text_' if text_to is not None else ''}interpolation_{tag}.mp4")
    batches = interpolation_frames(gen, n, cfg.frames, seed, psi, cfg.keyframes, str(cfg.interp), bool(cfg.loop),
                                   caption, text_to)
    frames = [grid_image(images, _nrow(cfg.get("nrow"), n)) for images in batches]
    return _wrote(write_video(frames, path, float(cfg.fps)), f"{len(frames)} frames")


def _output(out: Path | None, ckpt: str, name: str) -> Path:
    """The file to write: ``out`` (checked already), or ``name`` in the run's ``generated/``, checked
    before the work."""
    return out if out is not None else check_output_file(_out_dir(ckpt) / name, example=name)


def _timelapse(cfg: DictConfig) -> Path:
    run = cfg.get("run") or (Path(cfg.ckpt).expanduser().resolve().parent.parent if cfg.get("ckpt") else None)
    if not run:
        raise ValueError("mode=timelapse needs run=RUN_DIR (the run directory that holds samples/)")
    out = Path(cfg.out).expanduser() if cfg.get("out") else Path(run).expanduser() / "timelapse.mp4"
    out = check_output_file(out, example="timelapse.mp4")
    frames = timelapse_frames(run, label=bool(cfg.label))
    return _wrote(write_video(frames, out, float(cfg.fps)), f"{len(frames)} frames")


def _nrow(nrow: Any, n: int) -> int:
    """Faces per row: as asked, or a square-ish grid."""
    return check_count(nrow, "nrow") if nrow else math.ceil(math.sqrt(n))


def _save(picture: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return _wrote(path, f"{picture.width}x{picture.height}")


def _wrote(path: Path, what: str) -> Path:
    print(f"Wrote {path} ({what})")
    return path


def quote_free_text(argv: list[str]) -> list[str]:
    """Quote ``text=`` / ``text_to=`` values so that commas, apostrophes and brackets in a caption
    reach us as written instead of being parsed by Hydra's override grammar."""
    quoted = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in FREE_TEXT_KEYS and not (len(value) > 1 and value[0] == value[-1] and value[0] in "'\""):
            value = re.sub(r"(\\*)'", lambda m: m[1] * 2 + "\\'", value)
            value = re.sub(r"(\\+)$", lambda m: m[1] * 2, value)
            arg = f"{key}='{value}'"
        quoted.append(arg)
    return quoted


def main() -> None:
    import hydra

    @hydra.main(version_base="1.3", config_path="conf", config_name="generate")
    def _run(cfg: DictConfig) -> None:
        with user_errors():
            generate(cfg)

    warnings.formatwarning = lambda message, category, *args, **kwargs: f"{category.__name__}: {message}\n"
    sys.argv = quote_free_text(sys.argv)
    _run()


if __name__ == "__main__":
    main()
