"""Coloured speckles, measured: the high-frequency chroma of generated faces against real ones.

    python experiments/colour_noise.py CKPT [CKPT ...] [--n 512] [--raw]

A speckle is a pixel whose colour (not brightness) jumps away from its neighbours. Per image,
chroma is each channel minus the pixel's grey level; its high-frequency part is the chroma minus
its [1,2,1] blur. The script prints the RMS of that, and of the same for brightness, for ``--n``
faces of the checkpoint's EMA generator (``--raw``: the training generator; captions, for text
models, drawn from the dataset as the evaluation does) and for as many of its training images,
and their ratio (1 = as speckled as real faces), plus the share of pixels that the generator
drew outside [-1, 1] (clamped for display, so a saturated colour there).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from t2f.checkpoints import load_checkpoint


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (torch.outer(k, k) / 16).to(x)[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1])


def high_frequency(images: torch.Tensor) -> dict[str, float]:
    """RMS of the high-frequency chroma and luminance of images in [-1, 1] (N, 3, H, W)."""
    x = images.float()
    grey = x.mean(1, keepdim=True)
    chroma = x - grey
    return {"hf_chroma": (chroma - _blur(chroma)).square().mean().sqrt().item(),
            "hf_luma": (grey - _blur(grey)).square().mean().sqrt().item()}


@torch.no_grad()
def measure(ckpt: str, n: int, ema: bool) -> dict[str, float]:
    module, datamodule, _ = load_checkpoint(ckpt)
    gen = torch.Generator().manual_seed(0)
    inputs = module.sample_inputs(n, {}, generator=gen)
    if module.text is not None and getattr(datamodule, "vocab", None) is not None:
        inputs.update(module.encode_captions(datamodule.sample_captions(n, seed=0), datamodule.vocab))
    net = module.generator_ema if ema else module.generator
    net.eval()
    torch.manual_seed(0)
    raw = module.draw(net, inputs).float()
    real_set = datamodule.train_set
    real = torch.stack([real_set[i]["image"] for i in range(min(n, len(real_set)))]).float()
    if real.shape[-1] != raw.shape[-1]:
        real = F.interpolate(real, size=raw.shape[-2:], mode="area")
    fake, ref = high_frequency(raw.clamp(-1, 1)), high_frequency(real)
    return {"kimg": round(module.images_seen / 1000, 1), **{f"fake_{k}": v for k, v in fake.items()},
            **{f"real_{k}": v for k, v in ref.items()},
            "hf_chroma_ratio": fake["hf_chroma"] / ref["hf_chroma"],
            "hf_luma_ratio": fake["hf_luma"] / ref["hf_luma"],
            "out_of_range": (raw.abs() > 1).any(1).float().mean().item()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpts", nargs="+")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--raw", action="store_true", help="the training generator instead of the EMA one")
    parser.add_argument("--json", action="store_true", help="one JSON object per checkpoint")
    args = parser.parse_args()
    for ckpt in args.ckpts:
        result = measure(ckpt, args.n, ema=not args.raw)
        if args.json:
            print(json.dumps({"ckpt": ckpt, **result}))
        else:
            print(f"{ckpt}: " + " ".join(f"{k}={v:.3g}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
