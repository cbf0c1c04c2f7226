"""The metrics an evaluation runs over one stream of generated images, behind one registry.

Each measure is a small object: :meth:`prepare` gets its real-image statistics (computed once per
protocol and cached by the suite) and returns a :class:`Measurement`, whose ``update`` sees every
batch of fakes and whose ``compute`` gives the values (on every rank, with their collectives).
:data:`MEASURES` names them in the order they run; ``MetricSuite`` prepares the ones its config
turns on, feeds them the same fakes and gathers their values. Diversity draws its own fakes (many
per caption) and runs after them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from t2f.data.attributes import AttributeTask
from t2f.metrics.alignment import AlignmentMetric, mismatched_candidates, predict_log_probs
from t2f.metrics.inception import REPORTED_NAMES
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
        **r.common, "dir_repeats": opts["dir_repeats"], "dirs_per_repeat": opts["dirs_per_repeat"], "seed": r.seed})
    levels = range(int(math.log2(r.resolution)), int(math.log2(opts["min_resolution"])) - 1, -1)
    protocols = {"swd": reported, **{f"swd/{2 ** level}": reported for level in levels}}
    return Measurement(lambda x, start, stop: swd.update(x, real=False), compute, protocols)


def measure_inception(suite: MetricSuite, r: Round) -> Measurement | None:
    """FID, KID and IS on torch-fidelity's InceptionV3 features (those ``metrics.inception.names`` lists)."""
    inc = suite.inception_metrics()
    if not inc.available:
        suite.warn("FID/KID/IS are skipped: the Inception weights are not available "
                   "(set metrics.inception_weights=/path/to/weights; see the warning above)")
        return None
    inc.to(r.device)
    proto = Protocol(feature_extractor=inc.feature_extractor_id, **{**r.base, "num_fake": 0}, options=r.common)

    def real_statistics() -> Any:
        inc.reset(real=True)
        suite.real_pass(r.real_set, r.real_indices, r.resolution, r.device,
                        lambda x, pos: inc.update(x, real=True, index=pos), positions=True)
        return inc.real_statistics()

    inc.load_real_statistics(suite.real_statistics(("inception", proto.key()), proto, "inception", real_statistics))
    opts = suite.inception
    subset = min(int(opts["kid_subset_size"]), len(r.real_indices), r.num_fake)
    splits = min(int(opts["is_splits"]), r.num_fake)
    if "kid" in inc:
        inc["kid"].subset_size = subset
    if "is" in inc:
        inc["is"].splits = splits
    reported = proto.replace(num_fake=r.num_fake, options={
        **r.common, "kid_subset_size": subset, "kid_subsets": opts["kid_subsets"], "is_splits": splits,
        "seed": r.seed})
    return Measurement(lambda x, start, stop: inc.update(x, real=False, index=torch.arange(start, stop)),
                       lambda: {REPORTED_NAMES[k]: v for k, v in inc.compute().items()},
                       {name: reported for name in ("fid", "kid", "kid_std", "is", "is_std")})


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
        "score": "sum log p(value|x) - log prior(value)"})
    names = ("alignment", "alignment_match", "alignment_match_real", "alignment_match_floor", "alignment_accuracy",
             "r_precision", "r_precision_vs_real", *(f"alignment_accuracy/{n}" for n in task.names))
    protocols: dict[str, Protocol] = {**{name: reported for name in names}, **{name: proto for name in extra}}
    return Measurement(update, lambda: relative_to_real(metric.compute(), extra), protocols)


# name -> (the MetricSuite option that turns it on, the measure); they run in this order
MEASURES: Mapping[str, tuple[str, Callable[[MetricSuite, Round], Measurement | None]]] = {
    "swd": ("swd", measure_swd),
    "fid/kid/is": ("inception", measure_inception),
    "alignment": ("alignment", measure_alignment),
}
