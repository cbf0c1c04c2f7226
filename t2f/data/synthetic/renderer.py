"""Drawing one cartoon face with PIL from its attributes (plus pose, shape and lighting jitter)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

MIN_RESOLUTION, MAX_RESOLUTION = 8, 128
SUPERSAMPLE = 4  # drawn at 4x the output resolution, then box-filtered down

# ----------------------------------------------------------------------------- colours

_SKIN = np.array([(255, 226, 204), (236, 188, 148), (192, 132, 86), (112, 70, 44)], np.float32)
_HAIR = np.array(
    [(24, 20, 20), (112, 62, 26), (244, 206, 78), (212, 64, 22), (138, 138, 144), (244, 244, 240)], np.float32
)
_EYES = np.array([(104, 52, 16), (30, 110, 245), (24, 170, 50)], np.float32)
_BACKGROUND = np.array(
    [(70, 140, 240), (84, 196, 96), (250, 220, 60), (248, 150, 205), (150, 90, 215), (250, 140, 40)], np.float32
)
_SHIRTS = np.array(
    [(60, 60, 70), (205, 205, 212), (40, 50, 95), (112, 38, 50), (96, 110, 60), (40, 110, 112), (98, 78, 60)],
    np.float32,
)
_FRAMES = np.array([(12, 12, 12), (70, 30, 20), (120, 10, 20), (20, 30, 90)], np.float32)


def check_render_resolution(resolution: int) -> None:
    """Refuses sizes the renderer does not draw: powers of two from MIN_RESOLUTION to MAX_RESOLUTION."""
    r = int(resolution)
    if r != resolution or r < MIN_RESOLUTION or r > MAX_RESOLUTION or r & (r - 1):
        raise ValueError(
            f"resolution must be a power of two between {MIN_RESOLUTION} and {MAX_RESOLUTION}, got {resolution!r}"
        )


# ---------------------------------------------------------------------------- rendering

_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    if resolution not in _GRIDS:
        c = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution - 0.5
        _GRIDS[resolution] = (c[None, :, None], c[:, None, None])
    return _GRIDS[resolution]


def _rgb(c: np.ndarray, alpha: int | None = None) -> tuple[int, ...]:
    t = tuple(min(255, max(0, int(v))) for v in c.tolist())
    return t if alpha is None else (*t, alpha)


def render_face(attrs: dict[str, int], rng: np.random.Generator, resolution: int) -> np.ndarray:
    """Draw one face for ``attrs``; returns a uint8 array of shape (resolution, resolution, 3).

    All randomness (jitter of pose, shape, colours and lighting) comes from ``rng``.
    """
    check_render_resolution(resolution)
    u = rng.random(40)  # a fixed budget of uniforms keeps the stream layout stable
    n = rng.normal(0.0, 1.0, 12)

    S = SUPERSAMPLE * resolution  # output canvas size (before downsampling)
    m = S // 8  # margin of the drawing canvas, so rotations/shifts never show its edge
    W = S + 2 * m

    def X(v: float) -> float:
        return m + v * S

    def box(cx: float, cy: float, rx: float, ry: float) -> list[float]:
        return [X(cx - rx), X(cy - ry), X(cx + rx), X(cy + ry)]

    def lw(v: float) -> int:
        return max(1, round(v * S))

    man = attrs["gender"] == 0
    hair_len = attrs["hair_length"]
    bg = _BACKGROUND[attrs["background"]] + n[0:3] * 6
    skin = _SKIN[attrs["skin_tone"]] + n[3] * 6
    hair = _HAIR[attrs["hair_color"]] + n[4:7] * 5
    iris = _EYES[attrs["eye_color"]] + n[7:10] * 6
    shirt = _SHIRTS[int(u[0] * len(_SHIRTS))] + n[10] * 10
    dark_hair = hair * 0.78

    # face geometry (unit coordinates: the output image spans [0, 1] x [0, 1])
    cx, cy = 0.5, 0.47
    hrx = 0.205 * (0.9 + 0.2 * u[1]) * (0.93 if not man else 1.0)  # face width
    hry = 0.26 * (0.95 + 0.1 * u[2])
    eye_dx = hrx * (0.36 + 0.1 * u[3])  # eye spacing
    eye_y = cy - hry * (0.02 + 0.1 * u[4])
    erx, ery = hrx * (0.25 + 0.04 * u[5]), hry * (0.14 + 0.03 * u[6])
    mouth_y = cy + hry * (0.5 + 0.08 * u[7])
    mouth_w = hrx * (0.36 + 0.12 * u[8])

    img = Image.new("RGB", (W, W), _rgb(bg))
    d = ImageDraw.Draw(img, "RGBA")

    # shoulders / shirt
    srx = 0.36 + 0.08 * u[9]
    d.ellipse(box(cx, 1.07, srx, 0.27 + 0.03 * u[10]), fill=_rgb(shirt))

    # long hair falls behind the head, beside the face, down to the shoulders
    vol = 1.08 + 0.12 * u[11]  # hair volume
    if hair_len == 2:
        bottom = cy + hry * (1.05 + 0.55 * u[12])
        wrx = hrx * (1.25 + 0.2 * u[13])
        d.rounded_rectangle(
            [X(cx - wrx), X(cy - hry * vol), X(cx + wrx), X(bottom)], radius=wrx * S * 0.95, fill=_rgb(hair)
        )

    # neck
    d.rectangle([X(cx - hrx * 0.42), X(cy + hry * 0.4), X(cx + hrx * 0.42), X(0.95)], fill=_rgb(skin * 0.86))
    if hair_len == 2:  # some locks fall in front of the shoulders
        for side in (-1, 1):
            x0 = cx + side * hrx * (0.85 + 0.1 * u[14])
            d.ellipse(box(x0, cy + hry * 0.9, hrx * 0.28, hry * 0.55), fill=_rgb(hair))
    else:  # ears
        for side in (-1, 1):
            d.ellipse(box(cx + side * hrx * 0.97, eye_y + hry * 0.12, hrx * 0.17, hry * 0.21), fill=_rgb(skin * 0.9))

    # head
    d.ellipse(box(cx, cy, hrx, hry), fill=_rgb(skin))

    # beard: the lower face, with an opening around the mouth
    if attrs["beard"]:
        a = round(8 + 14 * u[15])  # integer angles: PIL's chord misdraws fractional ones
        d.chord(box(cx, cy + hry * 0.02, hrx * 1.03, hry * 1.06), start=a, end=180 - a, fill=_rgb(dark_hair))
        d.ellipse(box(cx, mouth_y, mouth_w * 1.15, hry * 0.16), fill=_rgb(skin * 0.95))

    # nose
    nose_y = cy + hry * (0.22 + 0.06 * u[16])
    d.ellipse(box(cx, nose_y, hrx * 0.09, hry * 0.08), fill=_rgb(skin * 0.76))

    # mouth: an open "D" smile with teeth, or a straight line
    if attrs["smile"]:
        mh = hry * (0.2 + 0.06 * u[17])
        d.chord(box(cx, mouth_y - mh * 0.35, mouth_w, mh), start=0, end=180, fill=(135, 22, 32))
        d.rectangle(
            [X(cx - mouth_w * 0.72), X(mouth_y - mh * 0.35), X(cx + mouth_w * 0.72), X(mouth_y - mh * 0.05)],
            fill=(250, 250, 250),
        )
    else:
        tilt = (u[17] - 0.5) * hry * 0.08
        d.line(
            [(X(cx - mouth_w * 0.8), X(mouth_y + tilt)), (X(cx + mouth_w * 0.8), X(mouth_y - tilt))],
            fill=(120, 36, 42),
            width=lw(0.022),
        )

    # eyes: white, iris, pupil, highlight
    for side in (-1, 1):
        ex = cx + side * eye_dx
        d.ellipse(box(ex, eye_y, erx, ery), fill=(250, 250, 250))
        ir = min(erx, ery) * 0.95
        d.ellipse(box(ex + (u[18] - 0.5) * erx * 0.3, eye_y, ir, ir), fill=_rgb(iris))
        d.ellipse(box(ex + (u[18] - 0.5) * erx * 0.3, eye_y, ir * 0.42, ir * 0.42), fill=(10, 10, 10))

    # eyebrows
    brow = dark_hair if hair_len else _HAIR[attrs["hair_color"]] * 0.6 + 20
    brow_y = eye_y - ery - hry * (0.1 + 0.06 * u[19])
    brow_tilt = (u[20] - 0.5) * hry * 0.12
    for side in (-1, 1):
        ex = cx + side * eye_dx
        d.line(
            [(X(ex - side * erx), X(brow_y + brow_tilt)), (X(ex + side * erx * 1.1), X(brow_y - brow_tilt))],
            fill=_rgb(brow),
            width=lw(0.024),
        )

    # hair on top of the head (short and long), with an asymmetric parting
    if hair_len:
        a0, a1 = round(18 + 20 * u[21]), round(18 + 20 * u[22])
        top = cy - hry * (0.06 + 0.06 * u[23])
        d.chord(box(cx, top, hrx * vol, hry * (0.98 + 0.08 * u[24])), start=180 + a0, end=360 - a1, fill=_rgb(hair))
        if hair_len == 1 and u[25] < 0.6:  # sideburns / side hair of short cuts
            for side in (-1, 1):
                x0 = cx + side * hrx * 0.93
                d.ellipse(box(x0, eye_y - hry * 0.25, hrx * 0.13, hry * 0.28), fill=_rgb(hair))
    else:  # bald: a highlight on the scalp
        d.ellipse(box(cx - hrx * 0.3, cy - hry * 0.72, hrx * 0.28, hry * 0.12), fill=(255, 255, 255, 70))

    # glasses: thick frames, tinted lenses, bridge and temples
    if attrs["glasses"]:
        frame = _rgb(_FRAMES[int(u[26] * len(_FRAMES))])
        grx, gry = erx * (1.45 + 0.2 * u[27]), ery * (1.9 + 0.3 * u[28])
        fw = lw(0.03)
        round_frames = u[29] < 0.5
        for side in (-1, 1):
            ex = cx + side * eye_dx
            b = box(ex, eye_y, grx, gry)
            if round_frames:
                d.ellipse(b, fill=(210, 235, 255, 70), outline=frame, width=fw)
            else:
                d.rounded_rectangle(b, radius=gry * S * 0.5, fill=(210, 235, 255, 70), outline=frame, width=fw)
            d.line([(X(ex + side * grx), X(eye_y - gry * 0.3)), (X(cx + side * hrx), X(eye_y - gry * 0.4))],
                   fill=frame, width=fw)
        d.line([(X(cx - eye_dx + grx), X(eye_y - gry * 0.2)), (X(cx + eye_dx - grx), X(eye_y - gry * 0.2))],
               fill=frame, width=fw)

    # pose jitter: rotation, scale, translation, as one affine resampling into the output canvas
    angle = math.radians((u[30] - 0.5) * 20)
    scale = 0.9 + 0.2 * u[31]
    tx, ty = (u[32] - 0.5) * 0.12 * S, (u[33] - 0.5) * 0.08 * S
    ca, sa = math.cos(angle) / scale, math.sin(angle) / scale
    ox, oy = 0.5 * S + tx, 0.5 * S + ty  # output point that the canvas centre maps to
    ix, iy = m + 0.5 * S, m + 0.5 * S
    coeffs = (ca, sa, ix - ca * ox - sa * oy, -sa, ca, iy + sa * ox - ca * oy)
    img = img.transform((S, S), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR,
                        fillcolor=_rgb(bg))
    img = img.reduce(SUPERSAMPLE)  # box filter: anti-aliased downsampling

    # lighting: brightness, contrast, colour cast and a soft linear gradient
    x = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    gx, gy = _grid(resolution)
    phi = 2 * math.pi * u[34]
    ramp = (0.22 * u[35]) * (gx * math.cos(phi) + gy * math.sin(phi))
    contrast = 0.85 + 0.3 * u[36]
    gain = 1.0 + (u[37:40] - 0.5) * 0.08
    x = (x - 0.5) * contrast + 0.5 + (u[38] - 0.5) * 0.14 + ramp
    x *= gain
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
