"""Videos from frames: MP4 through PyAV (``pip install av``, the ``video`` extra), else an
animated GIF through Pillow; and the training timelapse made of a run's sample grids.

A GIF stores frame times in hundredths of a second and Pillow merges pixel-identical
consecutive frames (their durations add up), so only the MP4 is guaranteed to hold exactly
one frame per image given.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["has_pyav", "sample_grids", "timelapse_frames", "write_video"]

SAMPLE_NAME = re.compile(r"^kimg(\d+(?:\.\d+)?)_(\d+)px\.png$")  # t2f.callbacks.samples.SampleGrid


def has_pyav() -> bool:
    return importlib.util.find_spec("av") is not None


def write_video(frames: Sequence[Image.Image], path: str | os.PathLike, fps: float = 24.0) -> Path:
    """Write ``frames`` (same size) as ``path``: MP4 (H.264) when the suffix is .mp4 and PyAV is
    installed, otherwise an animated GIF (``path`` with suffix .gif). Returns the path written."""
    if not frames:
        raise ValueError("no frames to write")
    if not fps > 0:
        raise ValueError(f"fps={fps} must be positive")
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".mp4":
        if has_pyav():
            _write_mp4(frames, path, fps)
            return path
        path = path.with_suffix(".gif")
        print(f"PyAV is not installed (pip install av, or pip install -e '.[video]'): writing a GIF instead: {path}")
    elif path.suffix.lower() != ".gif":
        raise ValueError(f"out={path}: choose a .mp4 or .gif file")
    frames = [f.convert("RGB") for f in frames]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
    return path


def _write_mp4(frames: Sequence[Image.Image], path: Path, fps: float) -> None:
    import av

    width, height = (s + s % 2 for s in frames[0].size)  # yuv420p needs even sides
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18"}  # visually lossless: sample grids have fine detail
        for image in frames:
            canvas = Image.new("RGB", (width, height), "white")
            canvas.paste(image.convert("RGB"), (0, 0))
            for packet in stream.encode(av.VideoFrame.from_image(canvas)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def sample_grids(run_dir: str | os.PathLike) -> list[tuple[float, int, Path]]:
    """``(kimg, resolution, path)`` of the sample grids a run saved, in training order."""
    run_dir = Path(run_dir).expanduser()
    folder = run_dir / "samples" if (run_dir / "samples").is_dir() else run_dir
    if not folder.is_dir():
        raise FileNotFoundError(f"run={run_dir} does not exist: pass a run directory (it holds samples/)")
    grids = [(float(m[1]), int(m[2]), p) for p in folder.iterdir() if (m := SAMPLE_NAME.match(p.name))]
    if not grids:
        raise ValueError(f"{folder} holds no sample grids (kimg<kimg>_<res>px.png): was it written by t2f training?")
    return sorted(grids, key=lambda g: (g[0], g[1], g[2].name))


def timelapse_frames(run_dir: str | os.PathLike, label: bool = True) -> list[Image.Image]:
    """One frame per sample grid of the run, in kimg order, all at the size of the largest grid
    (smaller ones scaled up with nearest neighbours, centred), with kimg and resolution on top."""
    grids = sample_grids(run_dir)
    images = [Image.open(path).convert("RGB") for _, _, path in grids]
    width, height = max((im.size for im in images), key=lambda s: s[0] * s[1])
    font = ImageFont.load_default()
    band = 16 if label else 0
    frames = []
    for (kimg, resolution, _), image in zip(grids, images):
        scale = min(width / image.width, height / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        frame = Image.new("RGB", (width, height + band), "white")
        frame.paste(image.resize(size, Image.NEAREST), ((width - size[0]) // 2, band + (height - size[1]) // 2))
        if label:
            ImageDraw.Draw(frame).text((4, 2), f"{kimg:.3f} kimg   {resolution}x{resolution}", fill="black", font=font)
        frames.append(frame)
    return frames
