"""How much of the alignment score is image quality: real faces with their own captions, blurred,
shrunk or noised, scored against the clean ones.

    python experiments/alignment_image_quality.py CKPT

The checkpoint only names the dataset and its config (CelebA or another attribute dataset); the
classifier is the evaluation's own (cached). The validation faces in even places with their
captions are the reference, as in ``python -m t2f.evaluate``; the faces in odd places, degraded,
play the fakes. Their captions are exactly right, so every point they lose below 1.0 is image
quality, not text: the figure to read a generator's alignment against.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from t2f.checkpoints import load_checkpoint
from t2f.metrics.alignment import distribution_match, mentioned_evidence, predict_log_probs
from t2f.metrics.measures import attribute_task
from t2f.metrics.suite import _item_captions, _items, _resize, _subset, dataset_identity

if len(sys.argv) != 2:
    sys.exit("usage: python experiments/alignment_image_quality.py CKPT")
ckpt = sys.argv[1]
device = torch.device("cpu")
with initialize_config_module("t2f.conf", version_base=None):
    cfg = compose("evaluate", overrides=[f"ckpt={ckpt}", "metrics=[swd,alignment,diversity]"])
module, dm, _ = load_checkpoint(ckpt, device)
suite = instantiate(cfg.metrics, num_samples=2000, num_real=2000, batch_size=cfg.batch_size).suite
task = attribute_task(dm)
ident = dataset_identity(dm, module.run_config["dataset"])
res = int(module.run_config["dataset"]["resolution"])
net, _, _, cached = suite.classifier(task, dm, ident, res, device)  # with the evaluation's real-face evidence
opts = suite._classifier_options()
val_set = dm.val_set
idx = _subset(len(val_set), int(opts["val_images"]), suite.real_seed)
images = _resize(_items(val_set, idx, ("image",))["image"], res)
texts, owner = [], []
for row, i in enumerate(idx):
    caps = _item_captions(val_set, int(i))
    if caps:
        texts.append(caps[0])
        owner.append(row)
targets = task.targets(texts)
owner = torch.tensor(owner)
images = images[owner]
print(f"{len(images)} validation faces at {res} px with their own captions")


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A 5-tap Gaussian blur of std ``sigma`` pixels, per channel."""
    k = torch.arange(-2, 3, dtype=torch.float32)
    w = torch.exp(-k ** 2 / (2 * sigma ** 2))
    w = w / w.sum()
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, w.view(1, 1, 1, 5).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(x, w.view(1, 1, 5, 1).repeat(3, 1, 1, 1), groups=3)


def down_up(x: torch.Tensor, r: int) -> torch.Tensor:
    """Detail above ``r`` px removed: area-averaged down, bilinear back up."""
    return F.interpolate(F.interpolate(x, size=r, mode="area"), size=res, mode="bilinear", align_corners=False)


gen = torch.Generator().manual_seed(0)
noise = torch.randn(images.shape, generator=gen)
variants = {
    "clean": images,
    "blur 0.5": blur(images, 0.5), "blur 0.8": blur(images, 0.8), "blur 1.2": blur(images, 1.2),
    f"{res // 2} px": down_up(images, res // 2),
    "noise 0.05": (images + 0.05 * noise).clamp(-1, 1), "noise 0.15": (images + 0.15 * noise).clamp(-1, 1),
}
# the reference, real and floor evidence that `python -m t2f.evaluate` compares with ("clean" must score 1)
reference, real, floor = (cached[f"evidence_{k}"] for k in ("reference", "real", "floor"))
for name, x in variants.items():
    lp = [p[1::2] for p in predict_log_probs(net, x)]
    fake = mentioned_evidence(lp, targets[1::2]).cpu()
    m = distribution_match(fake, reference, real, floor)
    shift = m["by_attribute_shift"]
    shift = shift[~torch.isnan(shift)]
    print(f"{name:12s} alignment {float(m['alignment']):.3f}  match {float(m['alignment_match']):.3f} "
          f"(real {float(m['alignment_match_real']):.3f}, floor {float(m['alignment_match_floor']):.3f})  "
          f"median shift {float(shift.median()):+.2f}")
