"""The metrics an evaluation runs over one stream of generated images, behind one registry.

Each measure is a small object: :meth:`prepare` gets its real-image statistics (computed once per
protocol and cached by the suite) and returns a :class:`Measurement`, whose ``update`` sees every
batch of fakes and whose ``compute`` gives the values (on every rank, with their collectives).
:data:`MEASURES` names them in the order they run; ``MetricSuite`` prepares the ones its config
turns on, feeds them the same fakes and gathers their values; measures that read the same features
(FID, KID, IS) share them through ``Round.shared``. Diversity draws its own fakes (many
per caption) and runs after them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from t2f.data.attributes import AttributeTask
from t2f.metrics.alignment import AlignmentMetric, mismatched_candidates, predict_log_probs
from t2f.metrics.inception import METRIC_KEYS, REPORTED_NAMES, InceptionMetrics
from t2f.metrics.protocol import Protocol
from t2f.metrics.swd import SlicedWassersteinDistance

if TYPE_CHECKING:
    from t2f.metrics.suite import DatasetIdentity, MetricSuite

__all__ = ["MEASURES", "Measurement", "Round", "attribute_task"]

# the real faces' evidence that the distribution-matched alignment compares with (in the classifier's cache)
REFERENCE = ("reference", "real", "floor")


def attribute_task(datamodule: Any) -> AttributeTask | None:
    """The datamodule's attribute task (t2f's datamodules have ``attribute_task()``; others: None)."""
    task = getattr(datamodule, "attribute_task", None)
    return task() if callable(task) else None


def relative_to_real(values: dict[str, Tensor], real: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The fakes' alignment numbers with the real faces' own beside them (plain scalars only)."""
    out = dict(values)
    out.update({k: v for k, v in real.items() if torch.as_tensor(v).dim() == 0})
    if "r_precision" in values and "r_precision_real" in real:
        out["r_precision_vs_real"] = values["r_precision"] / torch.as_tensor(real["r_precision_real"]).clamp_min(1e-6)
    return out


@dataclass
class Round:
    """What every measure of one evaluation shares: the fakes' resolution and count, their seed
    and captions, and the real images they are compared with."""

    module: Any
    datamodule: Any
    device: torch.device
    resolution: int
    num_fake: int
    seed: int
    captions: list[str] | None
    identity: DatasetIdentity
    real_set: Dataset
    real_indices: Sequence[int]
    base: dict[str, Any]  # the Protocol fields every measure shares
    common: dict[str, Any]  # the Protocol options every measure shares
    shared: dict[str, Any] = field(default_factory=dict)  # what measures prepare once per round
    fake_options: dict[str, Any] = field(default_factory=dict)  # how the fakes were drawn (psi < 1), for their protocols


@dataclass
class Measurement:
    update: Callable[[Tensor, int, int], None]  # (fakes, start, stop): their places among the samples
    compute: Callable[[], dict[str, Tensor]]
    protocols: dict[str, Protocol]
    notes: list[str] = field(default_factory=list)


def measure_swd(suite: MetricSuite, r: Round) -> Measurement | None:
    """ProGAN's sliced Wasserstein distance over a Laplacian pyramid (x1e3; ``swd/<res>`` per level)."""
    opts = suite.swd
    if r.resolution < opts["min_resolution"]:
        note = f"SWD skipped at {r.resolution}px: it needs at least {opts['min_resolution']}px (ProGAN's protocol)"
        return Measurement(lambda *_: None, dict, {}, [note])
    swd = SlicedWassersteinDistance(**opts, seed=0).to(r.device)
    proto = Protocol(feature_extractor=swd.feature_extractor_id, **{**r.base, "num_fake": 0}, options=r.common)

    def real_statistics() -> Any:
        suite.real_pass(r.real_set, r.real_indices, r.resolution, r.device, lambda x: swd.update(x, real=True))
        return swd.real_statistics()

    swd.load_real_statistics(suite.real_statistics(("swd", proto.key()), proto, "swd", real_statistics, swd.reset))

    def compute() -> dict[str, Tensor]:
        out = swd.compute()
        values = {"swd": out["swd_x1e3_avg"]}
        values.update({f"swd/{k.rsplit('_', 1)[1]}": v for k, v in out.items() if k != "swd_x1e3_avg"})
        return values

    reported = proto.replace(num_fake=r.num_fake, options={
        **r.common, "dir_repeats": opts["dir_repeats"], "dirs_per_repeat": opts["dirs_per_repeat"], "seed": r.seed,
        **r.fake_options})
    levels = range(int(math.log2(r.resolution)), int(math.log2(opts["min_resolution"])) - 1, -1)
    protocols = {"swd": reported, **{f"swd/{2 ** level}": reported for level in levels}}
    return Measurement(lambda x, start, stop: swd.update(x, real=False), compute, protocols)


def measure_inception(suite: MetricSuite, r: Round, name: str) -> Measurement | None:
    """FID, KID or IS (``name``) on torch-fidelity's InceptionV3 features. They share one extractor
    pass per batch and one real-statistics pass: the first of them prepared in a round loads the
    real features and feeds the fakes to all those ``metrics.inception.names`` lists; the others
    only compute."""
    inc = suite.inception_metrics()
    if not inc.available:
        suite.warn("FID/KID/IS are skipped: the Inception weights are not available "
                   "(set metrics.inception_weights=/path/to/weights; see the warning above)")
        return None
    first = "inception" not in r.shared
    if first:
        r.shared["inception"] = _prepare_inception(suite, r, inc)

    def update(x: Tensor, start: int, stop: int) -> None:
        if first:
            inc.update(x, real=False, index=torch.arange(start, stop))

    return Measurement(update, lambda: {REPORTED_NAMES[k]: v for k, v in inc.compute(names=[name]).items()},
                       {REPORTED_NAMES[k]: r.shared["inception"] for k in METRIC_KEYS[name]})


def _prepare_inception(suite: MetricSuite, r: Round, inc: InceptionMetrics) -> Protocol:
    """Load the round's real features into ``inc`` (cleared of fakes), fit KID subsets and IS
    splits to the image counts; returns the protocol FID, KID and IS are reported under."""
    inc.to(r.device)
    proto = Protocol(feature_extractor=inc.feature_extractor_id, **{**r.base, "num_fake": 0}, options=r.common)

    def real_statistics() -> Any:
        inc.reset(real=True)
        suite.real_pass(r.real_set, r.real_indices, r.resolution, r.device,
                        lambda x, pos: inc.update(x, real=True, index=pos), positions=True)
        return inc.real_statistics()

    inc.load_real_statistics(suite.real_statistics(("inception", proto.key()), proto, "inception", real_statistics))
    opts = suite.inception
    inc.kid_subset_size = min(int(opts["kid_subset_size"]), len(r.real_indices), r.num_fake)
    inc.is_splits = min(int(opts["is_splits"]), r.num_fake)
    return proto.replace(num_fake=r.num_fake, options={
        **r.common, "kid_subset_size": inc.kid_subset_size, "kid_subsets": opts["kid_subsets"],
        "is_splits": inc.is_splits, "seed": r.seed, **r.fake_options})


def measure_alignment(suite: MetricSuite, r: Round) -> Measurement | None:
    """Text-image alignment relative to real faces, R-precision and per-attribute accuracy, from an
    attribute classifier trained on the real faces (t2f.metrics.alignment)."""
    task = attribute_task(r.datamodule)
    if r.captions is None:
        suite.warn(f"alignment is skipped: {type(r.module).__name__} is not text-conditional")
        return None
    if task is None:
        suite.warn(f"alignment is skipped: {type(r.datamodule).__name__} has no attributes to check "
                   "captions against (synthetic and CelebA have)")
        return None
    net, log_priors, proto, extra = suite.classifier(task, r.datamodule, r.identity, r.resolution, r.device)
    reference = ({k: extra.pop(f"evidence_{k}") for k in REFERENCE}
                 if f"evidence_{REFERENCE[0]}" in extra else None)  # None: no validation captions
    metric = AlignmentMetric(task.names, log_priors, reference=reference,
                             min_count=int(suite.alignment["min_count"])).to(r.device)
    pool = task.targets(r.captions)
    gen_seed = r.seed * 1_000_003 + 17
    mismatched = int(suite.alignment["num_mismatched"])

    def update(x: Tensor, start: int, stop: int) -> None:
        targets = pool[start:stop]
        generator = torch.Generator().manual_seed(gen_seed + start)
        candidates, valid = mismatched_candidates(targets, pool, mismatched, generator)
        metric.update(predict_log_probs(net, x), targets, candidates, valid, index=torch.arange(start, stop))

    reported = proto.replace(num_fake=r.num_fake, split=f"{r.base['split']}+captions:val", options={
        **proto.options, "num_mismatched": mismatched, "seed": r.seed,
        "score": "sum log p(value|x) - log prior(value)", "fakes": "1-KS mean over sets of the real half's count",
        **r.fake_options})
    names = ("alignment", "alignment_match", "alignment_match_real", "alignment_match_floor", "alignment_accuracy",
             "r_precision", "r_precision_vs_real",
             *(f"alignment_{part}/{n}" for part in ("accuracy", "match", "shift") for n in task.names),
             *(f"alignment/{n}" for n in task.names))
    protocols: dict[str, Protocol] = {**{name: reported for name in names}, **{name: proto for name in extra}}
    return Measurement(update, lambda: relative_to_real(metric.compute(), extra), protocols)


# name -> (the MetricSuite option that turns it on, the measure); they run in this order. An option
# block with ``names`` (metrics.inception.names) turns on only the measures it names.
MEASURES: Mapping[str, tuple[str, Callable[[MetricSuite, Round], Measurement | None]]] = {
    "swd": ("swd", measure_swd),
    "fid": ("inception", partial(measure_inception, name="fid")),
    "kid": ("inception", partial(measure_inception, name="kid")),
    "is": ("inception", partial(measure_inception, name="is")),
    "alignment": ("alignment", measure_alignment),
}
