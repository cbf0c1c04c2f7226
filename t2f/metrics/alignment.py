"""Text-image alignment: does a generated face show the attributes its caption asked for?

An attribute classifier (a small CNN with one softmax head per attribute: the synthetic
faces' 9 categorical attributes, or CelebA's 40 binary ones) is trained on real training
images at the resolution being evaluated, once, and cached on disk under a ``Protocol`` key
(dataset, resolution, crop/resize, number of images, architecture and training options).

Each generated image is scored against the attributes *its caption mentions* (synthetic:
``parse_caption``; CelebA: ``caption_attributes``, where the gender word sets ``Male`` and a
mentioned beard sets ``No_Beard`` to 0). Reported:

- ``alignment``: how much of real faces' alignment the fakes reach, measured so that a
  caricature cannot win. For each attribute the evidence ``logit p(mentioned value | image)``
  of generated faces (for captions that mention it) is compared with the same evidence of
  real faces with their own captions (reference half of the validation images) by the
  two-sample Kolmogorov-Smirnov distance; ``alignment_match`` is ``1 - KS`` averaged over
  attributes. The same is measured for the other half of the real faces with their own
  captions (``alignment_match_real``: what real faces score, sampling noise included) and
  with shuffled captions (``alignment_match_floor``: what ignoring the text scores).
  ``alignment = (match - floor) / (real - floor)``: 1 is as real, 0 ignores the text, and
  fakes that show an attribute more strongly than real faces do lose, as do those that show
  it less. Generated faces are scored in disjoint sets of the real half's count per attribute
  (so that each set faces the same noise as the real half) and their ``1 - KS`` averaged over
  the sets, which makes the score of 2,000 samples steadier than that of one set. Per
  attribute, ``alignment_match/<attr>`` is the fakes' ``1 - KS`` and
  ``alignment_shift/<attr>`` the median of their evidence minus the reference's, in logits:
  positive where the fakes show the attribute more strongly than real faces with the same
  captions (a caricature), negative where they show it less (the caption not followed);
  ``alignment/<attr>`` is the attribute's own score on the same scale (1 as real, 0 as the
  floor; noisier than the mean, since each attribute has only the faces that mention it), so
  a gap to 1.0 can be read as a few attributes or all of them.
- ``alignment_accuracy`` (``/<attr>`` each): per-attribute accuracy of the classifier's
  prediction against the caption's value, averaged over the mentioned attributes, and
  ``alignment_accuracy_real`` for real validation faces with their own captions. It rewards
  exaggeration: on real CelebA at 32 px a T2F run scored 0.68 against real faces' 0.42, as rare
  attributes (bags under the eyes, a receding hairline, earrings) that real faces show subtly
  were drawn unmistakably. Kept as a diagnostic.
- ``r_precision``: the true caption ranked against ``num_mismatched`` (99) captions of other
  samples that state different attribute values; a caption's score for an image is
  ``sum over its mentioned attributes of log p(value | image) - log prior(value)`` (the prior
  is the training-set frequency, so mentioning fewer attributes is not an advantage); a hit
  when the true caption scores highest (ties count fractionally: 1 / (number tied)).
  ``r_precision_real`` is real faces' own and ``r_precision_vs_real`` the ratio; above 1
  means exaggerated attributes, not better faces.
- ``classifier_accuracy``: the classifier's plain held-out accuracy over all attributes.

A generator that ignores the text scores ``alignment`` near 0, the accuracy of independent
guessing (about ``sum_v p(v)^2`` per attribute) and an R-precision near 1 / (1 + num_mismatched).

``AlignmentMetric`` is a torchmetrics ``Metric`` (sum-reduced counts, gathered evidence with
each sample's index), so under DDP every rank updates with its own samples and ``compute()``
gives the numbers of all of them, in the same sample order whatever the number of processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from t2f.utils import progress

__all__ = [
    "AlignmentMetric",
    "AttributeClassifier",
    "caption_scores",
    "classifier_features",
    "distribution_match",
    "ks_distance",
    "mentioned_evidence",
    "mismatched_candidates",
    "train_attribute_classifier",
]


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
        for _ in progress(range(epochs), "training the attribute classifier"):
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


@torch.no_grad()
def classifier_features(net: AttributeClassifier, images: Tensor, batch_size: int = 256) -> Tensor:
    """(N, D) the classifier's penultimate features (what its heads read) of uint8 or [-1, 1] images."""
    device = next(net.parameters()).device
    return torch.cat([net.features(_as_float(x).to(device)).flatten(1) for x in images.split(batch_size)])


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


def mentioned_evidence(log_probs: Sequence[Tensor], targets: Tensor) -> Tensor:
    """(N, A) ``logit p(mentioned value | image)`` (the classifier's evidence for what the caption
    says), NaN where the caption does not mention the attribute."""
    columns = []
    for a, lp in enumerate(log_probs):
        value = targets[:, a].to(lp.device)
        picked = lp.float().gather(1, value.clamp_min(0)[:, None])[:, 0].clamp(max=-1e-7)
        logit = picked - torch.log(-torch.expm1(picked))
        columns.append(torch.where(value >= 0, logit, torch.full_like(logit, float("nan"))))
    return torch.stack(columns, dim=1)


def ks_distance(a: Tensor, b: Tensor) -> Tensor:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = a.double().sort().values, b.double().sort().values
    points = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, points, right=True).double() / len(a)
    cdf_b = torch.searchsorted(b, points, right=True).double() / len(b)
    return (cdf_a - cdf_b).abs().max()


def distribution_match(fake: Tensor, reference: Tensor, real: Tensor, floor: Tensor, min_count: int = 10
                       ) -> dict[str, Tensor]:
    """``1 - KS`` of each attribute's evidence (N, A; NaN = not mentioned) against ``reference``
    (real faces with their captions), for the fakes, for other ``real`` faces with their captions
    and for real faces with shuffled captions (``floor``), averaged over the attributes that
    ``min_count`` faces of every set mention. The fakes are split, in sample order, into as many
    disjoint sets of the real set's count per attribute as they fill, and their ``1 - KS`` is the
    mean over those sets: each set faces the same sampling noise as the real one (KS grows as the
    count falls), and the mean over all of them is far steadier than one set would be.
    ``by_attribute_match`` and ``by_attribute_shift`` (A,) are the fakes' ``1 - KS`` and median
    evidence (of those sets together) minus the reference's per attribute, and
    ``by_attribute_alignment`` the attribute's own ``(fake - floor) / (real - floor)``; NaN where an
    attribute was not scored (or, for the last, where real faces score no better than the floor)."""
    scores: dict[str, list[Tensor]] = {"fake": [], "real": [], "floor": []}
    by_match = torch.full((reference.shape[1],), float("nan"))
    by_shift = torch.full((reference.shape[1],), float("nan"))
    by_alignment = torch.full((reference.shape[1],), float("nan"))
    for a in range(reference.shape[1]):
        ref, rea, flo, fak = (x[:, a][~torch.isnan(x[:, a])] for x in (reference, real, floor, fake))
        n = len(rea)
        if min(len(ref), n, len(flo)) < min_count or len(fak) < min(n, min_count):
            continue
        sets = fak[: len(fak) // n * n].view(-1, n) if len(fak) >= n else fak[None]  # fewer: one set
        fake_a = torch.stack([1 - ks_distance(one, ref) for one in sets]).mean()
        real_a, floor_a = 1 - ks_distance(rea, ref), 1 - ks_distance(flo, ref)
        for key, value in (("fake", fake_a), ("real", real_a), ("floor", floor_a)):
            scores[key].append(value)
        by_match[a] = fake_a
        by_shift[a] = sets.double().median() - ref.double().median()
        if real_a > floor_a:
            by_alignment[a] = (fake_a - floor_a) / (real_a - floor_a)
    by_attribute = {"by_attribute_match": by_match, "by_attribute_shift": by_shift,
                    "by_attribute_alignment": by_alignment}
    if not scores["fake"]:
        nan = torch.tensor(float("nan"))
        return {"alignment": nan, "alignment_match": nan, "alignment_match_real": nan, "alignment_match_floor": nan,
                **by_attribute}
    fake, real, floor = (torch.stack(scores[k]).mean() for k in ("fake", "real", "floor"))
    return {
        "alignment": ((fake - floor) / (real - floor).clamp_min(1e-6)).float(),
        "alignment_match": fake.float(),
        "alignment_match_real": real.float(),
        "alignment_match_floor": floor.float(),
        **by_attribute,
    }


class AlignmentMetric(Metric):
    """Alignment of generated faces with their captions (see the module docstring).

    ``update(log_probs, targets, candidates=None, valid=None, index=None)``: ``log_probs`` per
    attribute (N, K_a); ``targets`` (N, A) with -1 for not mentioned; ``candidates`` (N, C, A)
    mismatched caption targets and ``valid`` (N, C) which of them exist; ``index`` (N,) the
    samples' numbers (default: in update order). ``reference``: the real faces' evidence
    ``{"reference", "real", "floor"}`` (``real_alignment``), for the distribution-matched score.
    ``compute()`` -> ``alignment_accuracy`` (+ ``/<attr>``), ``r_precision`` if candidates were
    given, and with a reference ``alignment`` and its ``alignment_match*`` parts.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    correct: Tensor
    total: Tensor
    rp_hits: Tensor
    rp_total: Tensor
    evidence: list[Tensor]
    index: list[Tensor]

    def __init__(self, names: Sequence[str], log_priors: Sequence[Tensor],
                 reference: Mapping[str, Tensor] | None = None, min_count: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.names = tuple(names)
        self.num_classes = tuple(len(p) for p in log_priors)
        self.log_prior = torch.cat([p.float() for p in log_priors])
        self.offsets = torch.tensor([0, *torch.tensor(self.num_classes).cumsum(0)[:-1].tolist()], dtype=torch.long)
        self.reference = None if reference is None else {k: reference[k].float() for k in ("reference", "real", "floor")}
        self.min_count = int(min_count)
        self._updates = 0
        a = len(self.names)
        self.add_state("correct", default=torch.zeros(a, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(a, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rp_hits", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rp_total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("evidence", default=[], dist_reduce_fx="cat")
        self.add_state("index", default=[], dist_reduce_fx="cat")

    def update(self, log_probs: Sequence[Tensor], targets: Tensor, candidates: Tensor | None = None,
               valid: Tensor | None = None, index: Tensor | None = None) -> None:
        device = self.correct.device
        targets = targets.to(device)
        preds = torch.stack([lp.argmax(dim=1) for lp in log_probs], dim=1).to(device)
        mentioned = targets >= 0
        self.correct += ((preds == targets) & mentioned).sum(0).double()
        self.total += mentioned.sum(0).double()
        if self.reference is not None:
            if index is None:
                index = torch.arange(self._updates, self._updates + len(targets))
            self._updates += len(targets)
            self.evidence.append(mentioned_evidence(log_probs, targets).to(device))
            self.index.append(index.to(device=device, dtype=torch.long))
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
        out["alignment_accuracy"] = per[seen].mean().float() if seen.any() else torch.tensor(float("nan"))
        for name, value, ok in zip(self.names, per, seen):
            if ok:
                out[f"alignment_accuracy/{name}"] = value.float()
        if self.rp_total > 0:
            out["r_precision"] = (self.rp_hits / self.rp_total).float()
        if self.reference is not None and len(self.evidence):
            evidence, index = dim_zero_cat(self.evidence), dim_zero_cat(self.index)
            evidence = evidence[index.argsort(stable=True)].cpu()
            matched = distribution_match(evidence, **self.reference, min_count=self.min_count)
            for key, prefix in (("match", "alignment_match"), ("shift", "alignment_shift"), ("alignment", "alignment")):
                for name, value in zip(self.names, matched.pop(f"by_attribute_{key}")):
                    if not torch.isnan(value):
                        out[f"{prefix}/{name}"] = value.float()
            out.update(matched)
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
