"""Text-image alignment: does a generated face show the attributes its caption asked for?

An attribute classifier (a small CNN with one softmax head per attribute: the synthetic
faces' 9 categorical attributes, or CelebA's 40 binary ones) is trained on real training
images at the resolution being evaluated, once, and cached on disk under a ``Protocol`` key
(dataset, resolution, crop/resize, number of images, architecture and training options).

Each generated image is scored against the attributes *its caption mentions* (synthetic:
``parse_caption``; CelebA: ``caption_attributes``, where the gender word sets ``Male`` and a
mentioned beard sets ``No_Beard`` to 0). Reported:

- ``alignment``: per-attribute accuracy of the classifier's prediction against the caption's
  value, averaged over the attributes that were mentioned (``alignment/<attr>`` each);
- ``r_precision``: the true caption ranked against ``num_mismatched`` (99) captions of other
  samples that state different attribute values; a caption's score for an image is
  ``sum over its mentioned attributes of log p(value | image) - log prior(value)`` (the prior
  is the training-set frequency, so mentioning fewer attributes is not an advantage); a hit
  when the true caption scores highest (ties count fractionally: 1 / (number tied));
- the ceilings: the same two numbers for real validation images with their own captions
  (``alignment_ceiling``, ``r_precision_ceiling``), and the classifier's plain held-out
  accuracy over all attributes (``classifier_accuracy``).

A generator that ignores the text scores the accuracy of independent guessing (about
``sum_v p(v)^2`` per attribute) and an R-precision near 1 / (1 + num_mismatched).

``AlignmentMetric`` is a torchmetrics ``Metric`` with sum-reduced counts, so under DDP every
rank updates with its own samples and ``compute()`` gives the numbers of all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

__all__ = [
    "AlignmentMetric",
    "AttributeClassifier",
    "AttributeTask",
    "attribute_task",
    "caption_scores",
    "celeba_task",
    "mismatched_candidates",
    "synthetic_task",
    "train_attribute_classifier",
]


# --------------------------------------------------------------------------- the task

@dataclasses.dataclass(frozen=True)
class AttributeTask:
    """Attributes of a dataset and how to read them from a caption.

    ``parse(text)`` returns ``{attribute name: value index}`` for the attributes the caption
    mentions. Real items' ``attributes`` vectors are value indices in ``names`` order.
    """

    name: str
    names: tuple[str, ...]
    num_classes: tuple[int, ...]
    parse: Callable[[str], dict[str, int]]

    @property
    def id(self) -> str:
        return f"{self.name}{len(self.names)}"

    def targets(self, captions: Sequence[str]) -> Tensor:
        """(N, A) int64 value indices of the mentioned attributes, -1 where not mentioned."""
        out = torch.full((len(captions), len(self.names)), -1, dtype=torch.long)
        index = {n: i for i, n in enumerate(self.names)}
        for row, text in enumerate(captions):
            for name, value in self.parse(text).items():
                if name in index:
                    out[row, index[name]] = int(value)
        return out


def synthetic_task() -> AttributeTask:
    from t2f.data.synthetic import ATTRIBUTES, parse_caption

    return AttributeTask("synthetic", tuple(ATTRIBUTES), tuple(len(v) for v in ATTRIBUTES.values()), parse_caption)


def _celeba_parse(text: str) -> dict[str, int]:
    from t2f.data.celeba import caption_attributes

    male, mentioned = caption_attributes(text)
    found = {name: (0 if name == "No_Beard" else 1) for name in mentioned}
    if male is not None:
        found["Male"] = int(male)
    return found


def celeba_task(names: Sequence[str]) -> AttributeTask:
    return AttributeTask("celeba", tuple(names), (2,) * len(names), _celeba_parse)


def attribute_task(datamodule: Any) -> AttributeTask | None:
    """The task of a datamodule with attributes and captions (synthetic, CelebA), else None."""
    from t2f.data.celeba import CelebADataModule
    from t2f.data.synthetic import SyntheticDataModule

    if isinstance(datamodule, SyntheticDataModule):
        return synthetic_task()
    if isinstance(datamodule, CelebADataModule):
        datamodule.setup("fit")
        return celeba_task(datamodule.attribute_names)
    return None


# --------------------------------------------------------------------------- the classifier

class AttributeClassifier(nn.Module):
    """Small CNN: conv-BN-LReLU blocks halving the resolution down to 4x4, then one linear
    layer giving the logits of every head (``num_classes`` per attribute, concatenated)."""

    def __init__(self, resolution: int, num_classes: Sequence[int], width: int = 32, max_width: int = 128) -> None:
        super().__init__()
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(f"AttributeClassifier resolution must be a power of two >= 4, got {resolution}")
        self.resolution = int(resolution)
        self.num_classes = tuple(int(k) for k in num_classes)
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2)]
        c, r = width, resolution
        while r > 4:
            c2 = min(2 * c, max_width)
            layers += [nn.Conv2d(c, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
            c, r = c2, r // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c * 16, sum(self.num_classes))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images.float()).flatten(1))

    def log_probs(self, images: Tensor) -> list[Tensor]:
        """Per attribute, (N, K_a) log-probabilities."""
        return [x.log_softmax(dim=1) for x in self(images).split(list(self.num_classes), dim=1)]


def train_attribute_classifier(
    images: Tensor,
    attributes: Tensor,
    num_classes: Sequence[int],
    *,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 2e-3,
    width: int = 32,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> AttributeClassifier:
    """Train on uint8 (N, 3, R, R) images (or floats in [-1, 1]) and (N, A) value indices,
    with random horizontal flips; deterministic for a seed on a given device. Eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = AttributeClassifier(images.shape[-1], num_classes, width=width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * max(1, -(-len(images) // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    net.train()
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=gen)
            for start in range(0, len(images), batch_size):
                idx = order[start:start + batch_size]
                if len(idx) < 2:
                    continue  # batch norm needs two samples
                x = _as_float(images[idx]).to(device)
                flip = torch.rand(len(idx), generator=gen) < 0.5
                x = torch.where(flip.to(device)[:, None, None, None], x.flip(-1), x)
                y = attributes[idx].to(device)
                logits = net(x).split(list(net.num_classes), dim=1)
                loss = sum(F.cross_entropy(lg, y[:, a]) for a, lg in enumerate(logits))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return net.eval().requires_grad_(False)


def _as_float(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    return images.float()


@torch.no_grad()
def predict_log_probs(net: AttributeClassifier, images: Tensor, batch_size: int = 256) -> list[Tensor]:
    """Per attribute (N, K_a) log-probabilities of images (uint8 or [-1, 1]), in chunks."""
    device = next(net.parameters()).device
    chunks = [net.log_probs(_as_float(x).to(device)) for x in images.split(batch_size)]
    return [torch.cat([c[a] for c in chunks]) for a in range(len(net.num_classes))]


def class_priors(attributes: Tensor, num_classes: Sequence[int]) -> list[Tensor]:
    """Per attribute, the training-set value frequencies (add-one smoothed)."""
    return [(torch.bincount(attributes[:, a], minlength=k).double() + 1) / (len(attributes) + k)
            for a, k in enumerate(num_classes)]


# --------------------------------------------------------------------------- scoring

def caption_scores(pmi: Tensor, targets: Tensor, offsets: Tensor) -> Tensor:
    """Scores of captions for images: ``pmi`` (N, sum K) per-value log p - log prior,
    ``targets`` (N, ..., A) value indices (-1: not mentioned) -> (N, ...)."""
    shape = targets.shape
    flat = targets.reshape(shape[0], -1, shape[-1])
    idx = (offsets.view(1, 1, -1) + flat.clamp_min(0)).reshape(shape[0], -1)
    values = pmi.gather(1, idx).view(flat.shape) * (flat >= 0)
    return values.sum(-1).view(shape[:-1])


def mismatched_candidates(targets: Tensor, pool: Tensor, count: int, generator: torch.Generator,
                          oversample: int = 2) -> tuple[Tensor, Tensor]:
    """For each row of ``targets`` (N, A), up to ``count`` distinct rows of ``pool`` (P, A) whose
    values differ from it, drawn without replacement with ``generator``:
    ``(candidates (N, count, A), valid (N, count))``."""
    n, p = targets.shape[0], pool.shape[0]
    take = min(p, count * oversample)
    draw = torch.rand(n, p, generator=generator).topk(take, dim=1).indices  # (N, take), distinct per row
    cand = pool[draw]  # (N, take, A)
    differ = (cand != targets[:, None, :]).any(-1)
    order = torch.argsort((~differ).to(torch.int8), dim=1, stable=True)[:, :count]
    cand = cand.gather(1, order[..., None].expand(-1, -1, pool.shape[1]))
    valid = differ.gather(1, order)
    if cand.shape[1] < count:  # a small pool: pad with invalid entries
        pad = count - cand.shape[1]
        cand = torch.cat([cand, cand.new_full((n, pad, pool.shape[1]), -1)], dim=1)
        valid = torch.cat([valid, valid.new_zeros(n, pad)], dim=1)
    return cand, valid


class AlignmentMetric(Metric):
    """Per-attribute accuracy against caption targets, and R-precision (sum-reduced counts).

    ``update(log_probs, targets, candidates=None, valid=None)``: ``log_probs`` per attribute
    (N, K_a); ``targets`` (N, A) with -1 for not mentioned; ``candidates`` (N, C, A) mismatched
    caption targets and ``valid`` (N, C) which of them exist. ``compute()`` ->
    ``{"alignment", "alignment/<attr>", "r_precision"}`` (R-precision only if candidates were given).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    correct: Tensor
    total: Tensor
    rp_hits: Tensor
    rp_total: Tensor

    def __init__(self, names: Sequence[str], log_priors: Sequence[Tensor], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.names = tuple(names)
        self.num_classes = tuple(len(p) for p in log_priors)
        self.log_prior = torch.cat([p.float() for p in log_priors])
        self.offsets = torch.tensor([0, *torch.tensor(self.num_classes).cumsum(0)[:-1].tolist()], dtype=torch.long)
        a = len(self.names)
        self.add_state("correct", default=torch.zeros(a, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(a, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rp_hits", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rp_total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, log_probs: Sequence[Tensor], targets: Tensor, candidates: Tensor | None = None,
               valid: Tensor | None = None) -> None:
        device = self.correct.device
        targets = targets.to(device)
        preds = torch.stack([lp.argmax(dim=1) for lp in log_probs], dim=1).to(device)
        mentioned = targets >= 0
        self.correct += ((preds == targets) & mentioned).sum(0).double()
        self.total += mentioned.sum(0).double()
        if candidates is None:
            return
        pmi = torch.cat([lp.float() for lp in log_probs], dim=1).to(device) - self.log_prior.to(device)
        offsets = self.offsets.to(device)
        true = caption_scores(pmi, targets, offsets)  # (N,)
        other = caption_scores(pmi, candidates.to(device), offsets)  # (N, C)
        valid = valid.to(device) if valid is not None else torch.ones_like(other, dtype=torch.bool)
        beats = ((other > true[:, None]) & valid).any(1)
        ties = ((other == true[:, None]) & valid).sum(1)
        use = mentioned.any(1) & valid.any(1)
        hits = torch.where(beats, 0.0, 1.0 / (1.0 + ties.double()))
        self.rp_hits += hits[use].sum()
        self.rp_total += use.sum().double()

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        seen = self.total > 0
        per = torch.where(seen, self.correct / self.total.clamp_min(1), torch.zeros_like(self.total))
        out["alignment"] = per[seen].mean().float() if seen.any() else torch.tensor(float("nan"))
        for name, value, ok in zip(self.names, per, seen):
            if ok:
                out[f"alignment/{name}"] = value.float()
        if self.rp_total > 0:
            out["r_precision"] = (self.rp_hits / self.rp_total).float()
        return out


# --------------------------------------------------------------------------- cache helpers

def classifier_to_statistics(net: AttributeClassifier, priors: Sequence[Tensor],
                             extra: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A flat dict of tensors for ``cached_real_statistics``."""
    stats = {f"state.{k}": v.detach().cpu() for k, v in net.state_dict().items()}
    stats.update({f"prior.{a}": p.cpu() for a, p in enumerate(priors)})
    stats["meta.resolution"] = torch.tensor(net.resolution)
    stats.update({f"extra.{k}": torch.as_tensor(v).cpu() for k, v in extra.items()})
    return stats


def classifier_from_statistics(stats: Mapping[str, Tensor], num_classes: Sequence[int], width: int
                               ) -> tuple[AttributeClassifier, list[Tensor], dict[str, Tensor]]:
    net = AttributeClassifier(int(stats["meta.resolution"]), num_classes, width=width)
    net.load_state_dict({k[len("state."):]: v for k, v in stats.items() if k.startswith("state.")})
    priors = [stats[f"prior.{a}"] for a in range(len(num_classes))]
    extra = {k[len("extra."):]: v for k, v in stats.items() if k.startswith("extra.")}
    return net.eval().requires_grad_(False), priors, extra
