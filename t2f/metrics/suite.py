"""One evaluation of a GAN module: generate samples, compare them with real images, report
numbers with their protocol. Used by the training callback and by ``python -m t2f.evaluate``.
The metrics that read the one stream of samples are the measures of :mod:`t2f.metrics.measures`
(one registry: SWD, FID, KID, IS, alignment); diversity draws its own samples after them.

``MetricSuite.evaluate(module, datamodule, dataset_config, seed)``:

1. ``num_samples`` images come from the EMA generator (``module.generate``), at the module's
   current resolution (a progressive model's current stage). The samples are numbered
   0..M-1 and cut into global batches of ``batch_size``; under DDP rank r generates batches
   r, r + world, ... Latents are drawn for all M at once from ``seed`` and the generator's other
   noise (``module.noise_inputs``: StyleGAN's maps, T2F's conditioning augmentation) is seeded
   per batch, so the samples, hence the numbers,
   do not depend on the number of processes as long as ``batch_size <= M / world``.
   Text-conditional models are given validation captions (``datamodule.sample_captions``).
2. Real images (``num_real`` from ``real_split``, a fixed seeded subset) are brought to that
   resolution with ``fade_real(x, res, 1.0)`` (box filter), and their statistics are cached
   on disk per metric under ``cache_dir/<name>-<Protocol key>.pt``; the key covers the dataset
   config fingerprint, split, resolution, crop, resize, feature extractor and image count.
3. Metrics update on every rank with the rank's own images and compute on every rank (their
   states are all-gathered / summed), so every rank gets the same numbers. FID, KID and IS are
   those of ``torch_fidelity.calculate_metrics(input1=samples, input2=reals)``, each image
   numbered by its place among the samples / the real subset (KID and IS depend on the order).

Results are flat: ``swd`` (x1e3, average over pyramid levels) and ``swd/<res>``; ``fid``,
``kid``, ``kid_std``, ``is``, ``is_std``; ``alignment`` (1 = as real faces, 0 = text ignored)
with ``alignment/<attr>``, ``alignment_match`` (``/<attr>``), ``alignment_shift/<attr>``, ``alignment_match_real``, ``alignment_match_floor``,
``alignment_accuracy`` (``/<attr>``), ``alignment_accuracy_real``, ``r_precision``,
``r_precision_real``, ``r_precision_vs_real``, ``classifier_accuracy`` (t2f.metrics.alignment);
``diversity`` (1 = as varied as real faces with the caption's attributes) with
``diversity_fake``, ``diversity_real``, ``diversity_captions``, and ``swd_conditional``
(t2f.metrics.diversity).
A metric that cannot run (Inception weights missing, SWD below 16 px, alignment for an
unconditional model, diversity or alignment on a dataset without attributes) is skipped
with one warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from t2f.data.attributes import AttributeTask
from t2f.metrics.alignment import (
    AlignmentMetric,
    class_priors,
    classifier_features,
    classifier_from_statistics,
    classifier_to_statistics,
    mentioned_evidence,
    mismatched_candidates,
    predict_log_probs,
    train_attribute_classifier,
)
from t2f.metrics.common import dist_rank_world
from t2f.metrics.diversity import diversity_ratio, matching_reals, mean_pairwise_distance
from t2f.metrics.inception import (
    INCEPTION,
    InceptionMetrics,
    build_inception_metrics,
    check_metric_names,
)
from t2f.metrics.measures import MEASURES, Round, attribute_task
from t2f.metrics.protocol import Protocol, cached_real_statistics
from t2f.metrics.swd import SlicedWassersteinDistance
from t2f.utils import progress, select_inputs

__all__ = ["DatasetIdentity", "Evaluation", "MetricSuite", "dataset_identity"]

# Loader settings that never change the images (left out of the dataset fingerprint).
_LOADER_KEYS = {"batch_size", "num_workers", "pin_memory", "progress", "decode_workers", "cache", "cache_dir"}
SWD_DEFAULTS = dict(patches_per_image=128, patch_size=7, dir_repeats=4, dirs_per_repeat=128, min_resolution=16)
INCEPTION_DEFAULTS = dict(names=["fid", "kid", "is"], kid_subset_size=1000, kid_subsets=100, is_splits=10)
ALIGNMENT_DEFAULTS = dict(num_mismatched=99, train_images=20000, val_images=2000, epochs=5, batch_size=128,
                          lr=2e-3, width=32, seed=0, min_count=10)
DIVERSITY_DEFAULTS = dict(captions=32, per_caption=16, min_real=4)


class MetricWarning(UserWarning):
    """A metric was skipped (it cannot run for this model, dataset or resolution)."""


@dataclasses.dataclass(frozen=True)
class DatasetIdentity:
    """What the real images are: name, a fingerprint of the config, crop, native resolution."""

    name: str
    fingerprint: str
    crop: str
    resolution: int
    resize: str

    def resize_to(self, res: int) -> str:
        return self.resize if res == self.resolution else f"{self.resize}+box{self.resolution // res}x"


def dataset_identity(datamodule: Any, dataset_config: Mapping[str, Any] | None = None) -> DatasetIdentity:
    """From the run's resolved ``dataset`` config (``module.run_config["dataset"]``), else
    from the datamodule's simple attributes."""
    if dataset_config is None:
        dataset_config = {k: v for k, v in vars(datamodule).items()
                          if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))}
        dataset_config["_target_"] = f"{type(datamodule).__module__}.{type(datamodule).__qualname__}"
    plain = {str(k): v for k, v in dict(dataset_config).items() if k not in _LOADER_KEYS}
    fingerprint = hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]
    name = getattr(datamodule, "name", None)
    if not isinstance(name, str) or name == "images":
        name = type(datamodule).__name__.lower().replace("datamodule", "") or "dataset"
    crop = getattr(datamodule, "crop", None)
    crop_text = "none" if crop is None else (
        f"square-{crop.size or 'min'}" + (f"@{crop.center[0]:g},{crop.center[1]:g}" if crop.center else "-center"))
    resize = "lanczos" if crop is not None else "render-supersample-box"
    return DatasetIdentity(name, fingerprint, crop_text, int(datamodule.resolution), resize)


@dataclasses.dataclass
class Evaluation:
    """Values (floats) and, per value, the protocol it was measured under."""

    values: dict[str, float]
    protocols: dict[str, Protocol]
    resolution: int
    notes: list[str] = dataclasses.field(default_factory=list)


def _split(datamodule: Any, split: str) -> Dataset:
    datamodule.setup("fit")
    dataset = {"train": datamodule.train_set, "val": datamodule.val_set}.get(split)
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"metrics real_split={split!r}: the dataset has no such split (train or val)")
    return dataset


def _items(dataset: Dataset, indices: Sequence[int], keys: Sequence[str] = ("image",)) -> dict[str, Tensor]:
    """Stacked items; each item's random augmentation is seeded by its index."""
    out: dict[str, list[Tensor]] = {k: [] for k in keys}
    with torch.random.fork_rng(devices=[]):
        for i in indices:
            torch.manual_seed(int(i) + 7919)
            item = dataset[int(i)]
            for k in keys:
                out[k].append(item[k])
    return {k: torch.stack(v) for k, v in out.items()}


def _item_captions(dataset: Dataset, index: int) -> list[str]:
    """All caption texts of an item (synthetic faces, CelebA, any dataset with ``captions``)."""
    while isinstance(dataset, Subset):
        dataset, index = dataset.dataset, int(dataset.indices[index])
    captions = getattr(dataset, "captions", None)
    if captions is None:
        return []
    if hasattr(captions, "get") and hasattr(captions, "count"):
        return [captions.get(index, j) for j in range(captions.count(index))]
    return list(captions[index])


def _subset(n: int, count: int, seed: int) -> list[int]:
    if count >= n:
        return list(range(n))
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count].tolist())


def _resize(images: Tensor, res: int) -> Tensor:
    if images.shape[-1] == res:
        return images
    from t2f.growth import fade_real

    return fade_real(images, res, 1.0)


class MetricSuite:
    """The metrics of one config; see the module docstring.

    Args:
        swd: SWD options (``SWD_DEFAULTS``), or None to skip SWD.
        inception: ``{names: [fid, kid, is], kid_subset_size, kid_subsets, is_splits}``, or None;
            ``names`` picks the measures (one Inception pass serves them all).
        alignment: classifier and R-precision options (``ALIGNMENT_DEFAULTS``), or None.
        diversity: ``{captions, per_caption, min_real}`` (``DIVERSITY_DEFAULTS``), or None; uses
            the alignment classifier (its options from ``alignment``, else the defaults).
        num_samples / num_real: generated and real images per evaluation.
        inception_weights: ``metrics.inception_weights``; None = torch.hub cache / download.
        feature_extractor: ``inception-v3-compat`` or ``module`` (a saved nn.Module at
            ``inception_weights``, e.g. a small stub for tests).
    """

    def __init__(
        self,
        swd: Mapping[str, Any] | None = None,
        inception: Mapping[str, Any] | None = None,
        alignment: Mapping[str, Any] | None = None,
        diversity: Mapping[str, Any] | None = None,
        num_samples: int = 2048,
        num_real: int = 2048,
        batch_size: int = 64,
        seed: int = 0,
        cache_dir: str = "~/.cache/t2f/metrics",
        real_split: str = "train",
        real_seed: int = 0,
        inception_weights: str | None = None,
        feature_extractor: str = INCEPTION,
    ) -> None:
        if num_samples < 1 or num_real < 1 or batch_size < 1:
            raise ValueError("metrics.num_samples, metrics.num_real and metrics.batch_size must be positive")
        self.swd = {**SWD_DEFAULTS, **dict(swd)} if swd is not None else None
        self.inception = {**INCEPTION_DEFAULTS, **dict(inception)} if inception is not None else None
        if self.inception is not None:
            check_metric_names(self.inception["names"])
        self.alignment = {**ALIGNMENT_DEFAULTS, **dict(alignment)} if alignment is not None else None
        self.diversity = {**DIVERSITY_DEFAULTS, **dict(diversity)} if diversity is not None else None
        if not (self.swd or self.inception or self.alignment or self.diversity):
            raise ValueError("no metrics selected: give swd, inception, alignment and/or diversity options")
        self.num_samples, self.num_real, self.batch_size = int(num_samples), int(num_real), int(batch_size)
        self.seed, self.real_seed = int(seed), int(real_seed)
        self.cache_dir = str(cache_dir)
        self.real_split = str(real_split)
        self.inception_weights = inception_weights or None
        self.feature_extractor = feature_extractor
        self._inception: InceptionMetrics | None = None
        self._real: dict[tuple[str, str], Any] = {}  # (metric, protocol key) -> statistics / classifier
        self._warned: set[str] = set()

    # ----------------------------------------------------------------------------- helpers
    def warn(self, message: str) -> None:
        """One warning per message and suite, on rank 0."""
        if message in self._warned:
            return
        self._warned.add(message)
        if dist_rank_world()[0] == 0:
            warnings.warn(message, MetricWarning, stacklevel=3)

    def selects(self, name: str, option: str) -> bool:
        """Whether measure ``name`` runs: its option block is set and, where the block has ``names``
        (``metrics.inception.names``), lists it."""
        opts = getattr(self, option)
        return opts is not None and name in opts.get("names", (name,))

    def inception_metrics(self) -> InceptionMetrics:
        if self._inception is None:
            opts = self.inception
            self._inception = build_inception_metrics(
                list(opts["names"]), self.inception_weights, feature_extractor=self.feature_extractor,
                kid_subset_size=int(opts["kid_subset_size"]), kid_subsets=int(opts["kid_subsets"]),
                is_splits=int(opts["is_splits"]), batch_size=self.batch_size)
        return self._inception

    def real_pass(self, dataset: Dataset, indices: Sequence[int], res: int, device: torch.device, fn,
                   positions: bool = False) -> None:
        """``fn(images)`` over this rank's share of ``indices``; ``fn(images, their positions in
        indices)`` with ``positions`` (KID and IS number the images)."""
        rank, world = dist_rank_world()
        places = list(range(len(indices)))[rank::world]
        for start in progress(range(0, len(places), self.batch_size), "real images"):
            mine = places[start:start + self.batch_size]
            images = _resize(_items(dataset, [indices[p] for p in mine])["image"].to(device), res)
            if positions:
                fn(images, torch.tensor(mine))
            else:
                fn(images)

    def real_statistics(self, key: tuple[str, str], proto: Protocol, name: str, compute: Any,
                        after: Any = None) -> Any:
        """A measure's real-image statistics under ``proto``: kept for this suite's later
        evaluations, read from the disk cache, or computed (``compute()``) and cached; ``after()``
        runs once they are first had (e.g. to clear the metric of the real images)."""
        if key not in self._real:
            self._real[key] = cached_real_statistics(proto, self.cache_dir, compute, name=name)
            if after is not None:
                after()
        return self._real[key]

    # ----------------------------------------------------------------------------- evaluate
    @torch.no_grad()
    def evaluate(self, module: Any, datamodule: Any, dataset_config: Mapping[str, Any] | None = None,
                 seed: int | None = None, psi: float = 1.0) -> Evaluation:
        """Every selected measure on ``num_samples`` fakes; ``psi`` < 1 draws them truncated (the
        model's ``sample(psi=)``), and their protocols say so."""
        seed = self.seed if seed is None else int(seed)
        psi = float(psi)
        fake_options = {"psi": psi} if psi != 1.0 else {}
        rank, world = dist_rank_world()
        device = module.device
        m = self.num_samples
        if m < world:
            raise ValueError(f"metrics.num_samples={m} is smaller than the number of processes ({world})")
        bs = min(self.batch_size, -(-m // world))
        batches = [(s, min(s + bs, m)) for s in range(0, m, bs)]
        mine = batches[rank::world]

        if world > 1:  # samples come from rank 0's EMA generator on every rank: its buffers (e.g.
            # batch-norm statistics, which DDP does not synchronise here) may differ per rank
            ema = getattr(module, "generator_ema", None)
            for buffer in ema.buffers() if ema is not None else ():
                torch.distributed.broadcast(buffer, src=0)
        text = getattr(module, "text", None) is not None and getattr(datamodule, "vocab", None) is not None
        captions = datamodule.sample_captions(m, seed=seed) if text else None
        latents = module.sample_inputs(m, {}, generator=torch.Generator().manual_seed(seed), noise=False)

        def generate(start: int, stop: int) -> Tensor:
            inputs = select_inputs(latents, slice(start, stop))
            # the other per-image noise batch by batch (StyleGAN's maps for all samples would not fit)
            inputs.update(module.noise_inputs(stop - start, torch.Generator().manual_seed(seed * 1_000_003 + start)))
            inputs.update(fake_options)
            if captions is not None:
                inputs.update(module.encode_captions(captions[start:stop], datamodule.vocab))
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed * 1_000_003 + start)
                return module.generate(inputs).float()

        first = generate(*mine[0])
        res = int(first.shape[-1])
        ident = dataset_identity(datamodule, dataset_config)
        real_set = _split(datamodule, self.real_split)
        real_idx = _subset(len(real_set), self.num_real, self.real_seed)
        base = dict(dataset=ident.name, resolution=res, num_real=len(real_idx), num_fake=m, split=self.real_split,
                    crop=ident.crop, resize=ident.resize_to(res))
        common = {"dataset_config": ident.fingerprint, "real_seed": self.real_seed}
        round_ = Round(module, datamodule, device, res, m, seed, captions, ident, real_set, real_idx, base, common,
                       fake_options=fake_options)
        measurements = [measure(self, round_) for name, (option, measure) in MEASURES.items()
                        if self.selects(name, option)]
        measurements = [found for found in measurements if found is not None]
        protocols = {name: p for found in measurements for name, p in found.protocols.items()}
        notes = [note for found in measurements for note in found.notes]

        for j, (start, stop) in enumerate(progress(mine, f"evaluating {m} samples")):
            images = first if j == 0 else generate(start, stop)
            for found in measurements:
                found.update(images, start, stop)
        values: dict[str, float] = {}
        for found in measurements:  # the same order on every rank: they hold collectives
            values.update({k: float(v) for k, v in found.compute().items()})
        if self.diversity is not None:
            found = self._diversity(module, datamodule, ident, res, seed, base, common, fake_options)
            if found is not None:
                values.update({k: float(v) for k, v in found[0].items()})
                protocols.update(found[1])
        return Evaluation(values, {k: p for k, p in protocols.items() if k in values}, res, notes)

    # ----------------------------------------------------------------------------- diversity
    def _diversity(self, module: Any, datamodule: Any, ident: DatasetIdentity, res: int, seed: int,
                   base: Mapping[str, Any], common: Mapping[str, Any], fake_options: Mapping[str, Any] | None = None
                   ) -> tuple[dict[str, Tensor], dict[str, Protocol]] | None:
        """Diversity for one caption and the conditional SWD (t2f.metrics.diversity). Captions are
        shared out to the ranks (all faces of a caption on one rank); the sums are all-reduced."""
        task = attribute_task(datamodule)
        if task is None:
            self.warn(f"diversity is skipped: {type(datamodule).__name__} has no attributes to match real "
                       "faces with and no attribute classifier (synthetic and CelebA have)")
            return None
        opts, device = self.diversity, module.device
        fake_options = dict(fake_options or {})  # psi < 1: truncated fakes
        k, per = int(opts["captions"]), int(opts["per_caption"])
        net, _, clf_proto, _ = self.classifier(task, datamodule, ident, res, device)
        text = getattr(module, "text", None) is not None and getattr(datamodule, "vocab", None) is not None
        captions = datamodule.sample_captions(k, seed=seed + 1) if text else None
        targets = task.targets(captions) if text else torch.full((k, len(task.names)), -1, dtype=torch.long)
        real_set = _split(datamodule, self.real_split)
        attr_key = ("attributes", ident.fingerprint, self.real_split)
        if attr_key not in self._real:
            self._real[attr_key] = _items(real_set, range(len(real_set)), ("attributes",))["attributes"].long()
        matches = matching_reals(targets, self._real[attr_key], per, seed=self.real_seed)
        latents = module.sample_inputs(k * per, {}, generator=torch.Generator().manual_seed(seed + 2), noise=False)
        rank, world = dist_rank_world()
        sums = torch.zeros(k, 3, dtype=torch.float64, device=device)  # fake distance, real distance, real count
        swd = None
        if self.swd is not None and res >= self.swd["min_resolution"]:
            swd = SlicedWassersteinDistance(**self.swd, seed=0).to(device)
        for c in range(rank, k, world):
            inputs = select_inputs(latents, slice(c * per, (c + 1) * per))
            inputs.update(module.noise_inputs(per, torch.Generator().manual_seed(seed * 1_000_003 + 7 + c)))
            inputs.update(fake_options)
            if captions is not None:
                inputs.update(module.encode_captions([captions[c]] * per, datamodule.vocab))
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed * 1_000_003 + 7 + c)
                fakes = module.generate(inputs).float()
            sums[c, 0] = mean_pairwise_distance(classifier_features(net, fakes))
            if matches[c]:
                reals = _resize(_items(real_set, matches[c])["image"].to(device), res)
                sums[c, 1] = mean_pairwise_distance(classifier_features(net, reals))
                sums[c, 2] = len(reals)
                if swd is not None:
                    swd.update(reals, real=True)
            if swd is not None:
                swd.update(fakes, real=False)
        if world > 1:
            torch.distributed.all_reduce(sums)
        values = diversity_ratio(sums[:, 0].cpu(), sums[:, 1].cpu(), sums[:, 2].cpu(), int(opts["min_real"]))
        if not values["diversity_captions"]:
            self.warn(f"diversity: none of the {k} captions has {opts['min_real']} real faces with all its "
                       "attributes; use more real images or fewer mentioned attributes")
        if swd is not None:
            values["swd_conditional"] = swd.compute()["swd_x1e3_avg"]
        options = {**common, "captions": k, "per_caption": per, "min_real": int(opts["min_real"]), "seed": seed,
                   "features": clf_proto.feature_extractor, **fake_options}
        proto = Protocol(feature_extractor=f"{clf_proto.feature_extractor}-penultimate",
                         **{**base, "num_fake": k * per, "num_real": int(sums[:, 2].sum())}, options=options)
        protocols = {n: proto for n in values if n.startswith("diversity")}
        if "swd_conditional" in values:
            protocols["swd_conditional"] = proto.replace(feature_extractor=swd.feature_extractor_id)
        return values, protocols

    # ----------------------------------------------------------------------------- classifier
    def _classifier_options(self) -> dict[str, Any]:
        """The attribute classifier's options: the alignment block's, else the defaults (diversity alone)."""
        return self.alignment if self.alignment is not None else dict(ALIGNMENT_DEFAULTS)

    def classifier(self, task: AttributeTask, datamodule: Any, ident: DatasetIdentity, res: int,
                    device: torch.device):
        opts = self._classifier_options()
        train_set = _split(datamodule, "train")
        val_set = datamodule.val_set if datamodule.val_set is not None and len(datamodule.val_set) else None
        train_idx = _subset(len(train_set), int(opts["train_images"]), self.real_seed)
        val_idx = _subset(len(val_set), int(opts["val_images"]), self.real_seed) if val_set is not None else []
        extractor = (f"attrclf-{task.id}-w{opts['width']}-e{opts['epochs']}-b{opts['batch_size']}"
                     f"-lr{opts['lr']:g}-seed{opts['seed']}")
        proto = Protocol(dataset=ident.name, resolution=res, feature_extractor=extractor, num_real=len(train_idx),
                         num_fake=0, split="train", crop=ident.crop, resize=ident.resize_to(res),
                         options={"dataset_config": ident.fingerprint, "real_seed": self.real_seed,
                                  "val_images": len(val_idx), "num_mismatched": int(opts["num_mismatched"])})
        key = ("alignment", proto.key())
        if key not in self._real:
            def train() -> dict[str, Tensor]:
                rank, world = dist_rank_world()
                stats = None
                if rank == 0:
                    stats = self._train_classifier(task, train_set, train_idx, val_set, val_idx, res, device)
                if world > 1:  # trained once, on rank 0
                    box = [stats]
                    torch.distributed.broadcast_object_list(box, src=0)
                    stats = box[0]
                return stats
            self._real[key] = cached_real_statistics(proto, self.cache_dir, train, name="attribute-classifier")
        net, priors, extra = classifier_from_statistics(self._real[key], task.num_classes, int(opts["width"]))
        return net.to(device), [p.log() for p in priors], proto, extra

    def _train_classifier(self, task: AttributeTask, train_set: Dataset, train_idx: Sequence[int],
                          val_set: Dataset | None, val_idx: Sequence[int], res: int,
                          device: torch.device) -> dict[str, Tensor]:
        opts = self._classifier_options()
        data = _items(train_set, train_idx, ("image", "attributes"))
        images = _to_uint8(_resize(data["image"], res))
        attributes = data["attributes"].long()
        net = train_attribute_classifier(
            images, attributes, task.num_classes, epochs=int(opts["epochs"]), batch_size=int(opts["batch_size"]),
            lr=float(opts["lr"]), width=int(opts["width"]), seed=int(opts["seed"]), device=device)
        priors = class_priors(attributes, task.num_classes)
        extra: dict[str, Tensor] = {}
        if val_idx:
            extra = real_alignment(net, task, val_set, val_idx, priors, res, int(opts["num_mismatched"]),
                                   seed=int(opts["seed"]))
        return classifier_to_statistics(net, priors, extra)


def _to_uint8(images: Tensor) -> Tensor:
    from t2f.metrics.common import to_uint8

    return to_uint8(images)


@torch.no_grad()
def real_alignment(net, task: AttributeTask, dataset: Dataset, indices: Sequence[int], priors: Sequence[Tensor],
                   res: int, num_mismatched: int = 99, seed: int = 0) -> dict[str, Tensor]:
    """What real faces score: alignment accuracy and R-precision of real images with their own
    (first) caption (``alignment_accuracy_real``, ``r_precision_real``), the classifier's plain
    accuracy over all attributes, and the evidence the distribution-matched alignment compares
    with: images in even places with their captions (``evidence_reference``), those in odd places
    with theirs (``evidence_real``) and with the odd captions shuffled (``evidence_floor``)."""
    data = _items(dataset, indices, ("image", "attributes"))
    log_probs = predict_log_probs(net, _resize(data["image"], res))
    device = log_probs[0].device
    truth = data["attributes"].long().to(device)
    preds = torch.stack([lp.argmax(1) for lp in log_probs], dim=1)
    texts, owner = [], []  # caption 0 of each image, as datamodule.sample_captions gives
    for row, i in enumerate(indices):
        captions = _item_captions(dataset, int(i))
        if captions:
            texts.append(captions[0])
            owner.append(row)
    out = {"classifier_accuracy": (preds == truth).double().mean(0).mean().float()}
    if texts:
        targets = task.targets(texts)
        owner_t = torch.tensor(owner, device=device)
        mine = [lp[owner_t] for lp in log_probs]
        cand, valid = mismatched_candidates(targets, targets, num_mismatched, torch.Generator().manual_seed(seed))
        metric = AlignmentMetric(task.names, [p.log() for p in priors], sync_on_compute=False).to(device)
        metric.update(mine, targets, cand, valid)
        values = metric.compute()
        out["alignment_accuracy_real"] = values["alignment_accuracy"]
        if "r_precision" in values:
            out["r_precision_real"] = values["r_precision"]
        odd = [lp[1::2] for lp in mine]
        shuffled = targets[1::2][torch.randperm(len(targets[1::2]), generator=torch.Generator().manual_seed(seed))]
        out["evidence_reference"] = mentioned_evidence([lp[0::2] for lp in mine], targets[0::2]).cpu()
        out["evidence_real"] = mentioned_evidence(odd, targets[1::2]).cpu()
        out["evidence_floor"] = mentioned_evidence(odd, shuffled).cpu()
    return out
