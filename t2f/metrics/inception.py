"""FID, KID and IS with torchmetrics on torch-fidelity's InceptionV3, working offline.

How the weights load (torch-fidelity 0.4, torchmetrics 1.9, read from their source):

- ``torch_fidelity.FeatureExtractorInceptionV3(name, features_list, feature_extractor_weights_path)``
  builds the TF-ported InceptionV3 and loads ``torch.load(path)``, or, when the path is None,
  ``torch.hub.load_state_dict_from_url(URL_INCEPTION_V3)``, which caches the file as
  ``<torch.hub.get_dir()>/checkpoints/weights-inception-2015-12-05-6726825d.pth``. Its forward
  takes uint8 (N, 3, H, W), resizes to 299 with TF1.x-compatible bilinear interpolation (the
  protocol of the original TF FID code) and returns the requested features.
- torchmetrics' ``FrechetInceptionDistance`` forwards ``feature_extractor_weights_path``, but
  ``KernelInceptionDistance`` and ``InceptionScore`` do not (they always download), and all
  three default to an antialiased torch resize that is *not* the TF protocol. Each would also
  hold and run its own copy of the network.

So this module builds the extractor once (``FeatureExtractorInceptionV3`` with features
``2048`` and ``logits_unbiased``, loading from a local file that it resolves itself), runs it
once per batch, and feeds the features to torchmetrics' metrics, which are given a
pass-through ``feature`` module. torchmetrics then owns the states and their DDP reduction.
KID and IS are computed with a seeded generator over a canonical order of the features, so
the same protocol gives the same number whatever the batching and the number of processes.

With no weights file and no internet, ``build_inception_metrics`` emits one
``InceptionWeightsUnavailableWarning`` (which file, where to get it, where to put it) and
returns an empty ``InceptionMetrics``; the run goes on with the other metrics.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch_fidelity.feature_extractor_inceptionv3 import (
    URL_INCEPTION_V3,
    FeatureExtractorInceptionV3,
)
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd
from torchmetrics.utilities import dim_zero_cat

from t2f.metrics.common import as_rgb, dist_rank_world, full_precision, to_uint8

__all__ = [
    "INCEPTION_WEIGHTS_FILENAME",
    "INCEPTION_WEIGHTS_URL",
    "InceptionMetrics",
    "InceptionWeightsUnavailableWarning",
    "build_inception_metrics",
    "default_inception_weights_path",
    "load_feature_extractor",
]

INCEPTION_WEIGHTS_URL: str = URL_INCEPTION_V3
INCEPTION_WEIGHTS_FILENAME: str = URL_INCEPTION_V3.rsplit("/", 1)[-1]  # weights-inception-2015-12-05-6726825d.pth
INCEPTION = "inception-v3-compat"
MODULE = "module"
METRIC_NAMES = ("fid", "kid", "is")
_PROBE_RESOLUTION = 64
_WARNED: set[str] = set()


class InceptionWeightsUnavailableWarning(UserWarning):
    """The Inception weights could not be found or downloaded; FID/KID/IS are skipped."""


def default_inception_weights_path() -> Path:
    """Where torch-fidelity (through ``torch.hub``) keeps the downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILENAME


def _download_inception_weights(dst: Path) -> None:
    """Download torch-fidelity's InceptionV3 weights to ``dst`` (raises when offline)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(INCEPTION_WEIGHTS_URL, str(dst), progress=False)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _warn_once(message: str) -> None:
    if message in _WARNED:
        return
    _WARNED.add(message)
    rank, _ = dist_rank_world()
    env_rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    if rank == 0 and env_rank == 0:
        warnings.warn(message, InceptionWeightsUnavailableWarning, stacklevel=3)


class _TFInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's InceptionV3 whose weight loading fails with a clear ``ValueError``.

    It also accepts the same tensors with ``AuxLogits.*`` extras or without the (unused in
    eval) BatchNorm ``num_batches_tracked`` counters.
    """

    weights_path: str = ""

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        sd = {k: v for k, v in state_dict.items() if not k.startswith("AuxLogits.")}
        expected = self.state_dict()
        missing = sorted(k for k in expected if k not in sd and not k.endswith("num_batches_tracked"))
        unexpected = sorted(k for k in sd if k not in expected)
        shapes = sorted(k for k in sd if k in expected and tuple(sd[k].shape) != tuple(expected[k].shape))
        if missing or unexpected or shapes:
            raise ValueError(
                f"{self.weights_path} is not an InceptionV3 state dict for torch-fidelity "
                f"({INCEPTION_WEIGHTS_FILENAME}): {len(missing)} missing keys {missing[:3]}, "
                f"{len(unexpected)} unexpected keys {unexpected[:3]}, {len(shapes)} shape mismatches "
                f"{shapes[:3]}. Download the right file from {INCEPTION_WEIGHTS_URL}"
            )
        return super().load_state_dict(sd, strict=False, assign=assign)


class _FeatureOutputs(nn.Module):
    """Wraps an extractor so that it returns ``(features, logits)`` for uint8 (N, 3, H, W)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.module(images)
        if isinstance(out, (tuple, list)):
            feats, logits = (out[0], out[1]) if len(out) > 1 else (out[0], out[0])
        else:
            feats, logits = out, out
        return feats.reshape(feats.shape[0], -1).float(), logits.reshape(logits.shape[0], -1).float()


def load_feature_extractor(
    feature_extractor: str = INCEPTION, weights_path: str | os.PathLike | None = None
) -> tuple[nn.Module, str] | None:
    """The feature extractor and its protocol id, or None when the Inception weights are missing.

    - ``feature_extractor="inception-v3-compat"``: torch-fidelity's InceptionV3 with weights from
      ``weights_path`` (a state dict, e.g. ``weights-inception-2015-12-05-6726825d.pth``); with
      no path, from the torch.hub cache, downloading there if needed. If that fails (offline),
      one ``InceptionWeightsUnavailableWarning`` is emitted and None returned.
    - ``feature_extractor="module"``: ``weights_path`` holds a whole module (``torch.save(module)``
      or a TorchScript archive) mapping uint8 (N, 3, H, W) to features (N, D) or to a tuple
      ``(features, logits)``. The file is unpickled, so only load files you trust.

    The returned module maps uint8 images to ``(features, logits)``, is in eval mode and
    frozen. The id names the extractor and the SHA-256 prefix of its weights file.

    Raises:
        FileNotFoundError: ``weights_path`` is given but does not exist.
        ValueError: the file is not what ``feature_extractor`` needs, or an unknown extractor.
    """
    if feature_extractor not in (INCEPTION, MODULE):
        raise ValueError(f"feature_extractor must be {INCEPTION!r} or {MODULE!r}, got {feature_extractor!r}")
    path = Path(weights_path).expanduser() if weights_path not in (None, "") else None
    if path is not None and not path.is_file():
        raise FileNotFoundError(
            f"metrics.inception_weights={weights_path}: no such file. For FID/KID/IS, download "
            f"{INCEPTION_WEIGHTS_FILENAME} from {INCEPTION_WEIGHTS_URL} and pass its path"
        )

    if feature_extractor == MODULE:
        if path is None:
            raise ValueError("feature_extractor='module' needs weights_path: a torch.save'd or TorchScript module")
        try:
            module = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # any unpickling problem means a bad file
            raise ValueError(f"{path} could not be loaded as a module: {err}") from err
        if not isinstance(module, nn.Module):
            raise ValueError(
                f"{path} holds a {type(module).__name__}, not an nn.Module feature extractor"
                + (f" (a state dict? for Inception weights use feature_extractor={INCEPTION!r})"
                   if isinstance(module, Mapping) else "")
            )
        extractor: nn.Module = module
        ident = f"module-{_file_digest(path)[:12]}"
    else:
        if path is None:
            path = default_inception_weights_path()
            if not path.is_file():
                try:
                    _download_inception_weights(path)
                except Exception as err:  # offline shows up as many error types
                    _warn_once(
                        f"Inception weights are not available, so FID, KID and IS are skipped "
                        f"(the other metrics still run). Downloading {INCEPTION_WEIGHTS_URL} failed: "
                        f"{type(err).__name__}: {err}. To enable them, get torch-fidelity's "
                        f"{INCEPTION_WEIGHTS_FILENAME} from that URL on a machine with internet, and "
                        f"either put it at {path} or pass metrics.inception_weights=/path/to/"
                        f"{INCEPTION_WEIGHTS_FILENAME}."
                    )
                    return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"{path} is not an InceptionV3 state dict ({INCEPTION_WEIGHTS_FILENAME} from "
                f"{INCEPTION_WEIGHTS_URL}): {type(err).__name__}: {err}"
            ) from err
        if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
            raise ValueError(f"{path} does not hold a state dict of tensors; expected {INCEPTION_WEIGHTS_FILENAME}")
        del state
        _TFInceptionV3.weights_path = str(path)
        extractor = _TFInceptionV3(INCEPTION, ["2048", "logits_unbiased"], feature_extractor_weights_path=str(path))
        ident = f"{INCEPTION}-{_file_digest(path)[:12]}"
    extractor.eval().requires_grad_(False)
    return _FeatureOutputs(extractor), ident


class _PassThrough(nn.Module):
    """The ``feature`` module given to torchmetrics: features are already extracted."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


def _canonical_order(features: Tensor, seed: int) -> Tensor:
    """Rows sorted by a fixed random projection: independent of batching and DDP gather order."""
    gen = torch.Generator().manual_seed(seed + 9176)
    direction = torch.randn(features.shape[1], generator=gen, dtype=torch.float64).to(features.device)
    return features[torch.argsort(features.double() @ direction, stable=True)]


class _Seeded:
    """Mixed into torchmetrics' KID/IS: a seed for their random draws, and quiet construction
    (they warn that they keep all features, which is what a seeded recompute needs)."""

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            super().__init__(**kwargs)
        self.seed = seed


class _SeededKID(_Seeded, KernelInceptionDistance):
    """torchmetrics' KID with seeded subset draws over a canonical order, in float64."""

    def compute(self) -> tuple[Tensor, Tensor]:
        real = _canonical_order(dim_zero_cat(self.real_features).double(), self.seed)
        fake = _canonical_order(dim_zero_cat(self.fake_features).double(), self.seed)
        if min(real.shape[0], fake.shape[0]) < self.subset_size:
            raise ValueError(
                f"KID subset size {self.subset_size} exceeds the number of images "
                f"({real.shape[0]} real, {fake.shape[0]} fake); lower metrics.kid_subset_size"
            )
        gen = torch.Generator().manual_seed(self.seed)
        scores = []
        for _ in range(self.subsets):
            r = real[torch.randperm(real.shape[0], generator=gen)[: self.subset_size].to(real.device)]
            f = fake[torch.randperm(fake.shape[0], generator=gen)[: self.subset_size].to(fake.device)]
            scores.append(poly_mmd(r, f, self.degree, self.gamma, self.coef))
        kid = torch.stack(scores)
        return kid.mean().float(), kid.std(unbiased=False).float()


class _SeededIS(_Seeded, InceptionScore):
    """torchmetrics' Inception Score with a seeded split permutation over a canonical order."""

    def compute(self) -> tuple[Tensor, Tensor]:
        logits = _canonical_order(dim_zero_cat(self.features).double(), self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        logits = logits[torch.randperm(logits.shape[0], generator=gen).to(logits.device)]
        prob, log_prob = logits.softmax(dim=1), logits.log_softmax(dim=1)
        scores = []
        for p, lp in zip(prob.chunk(self.splits, dim=0), log_prob.chunk(self.splits, dim=0)):
            kl = p * (lp - p.mean(dim=0, keepdim=True).log())
            scores.append(kl.sum(dim=1).mean().exp())
        s = torch.stack(scores)
        return s.mean().float(), s.std().float()


class _FeatureStore(Metric):
    """All real features (cat over ranks), kept for ``real_statistics()`` whatever the metrics."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("features", default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor) -> None:
        self.features.append(features)

    def compute(self) -> Tensor:
        return dim_zero_cat(self.features)


class InceptionMetrics(nn.Module):
    """FID / KID / IS on one shared feature extractor; a read-only mapping name -> torchmetrics Metric.

    ``update(images, real)`` takes images in [-1, 1] (or uint8), runs the extractor once and
    feeds every metric (IS sees fakes only). ``compute()`` -> ``{"fid", "kid_mean", "kid_std",
    "is_mean", "is_std"}`` for the metrics built, as 0-dim float tensors; under DDP call update
    and compute on every rank. ``reset()`` clears the fake side and keeps the real one (pass
    ``real=True`` to clear both). ``real_statistics()`` / ``load_real_statistics()`` export and
    restore the real side for the disk cache of ``t2f.metrics.protocol``.

    Empty (``len() == 0``, falsy, ``available`` False) when the weights were unavailable; then
    update is a no-op and compute returns ``{}``. The extractor is held outside the module tree,
    so its weights never enter a checkpoint; ``.to(device)`` still moves it.
    """

    def __init__(
        self,
        extractor: nn.Module | None,
        feature_extractor_id: str | None,
        names: Sequence[str] = METRIC_NAMES,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        is_splits: int = 10,
        seed: int = 0,
        batch_size: int = 64,
        **metric_kwargs: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(set(names) - set(METRIC_NAMES))
        if unknown:
            raise ValueError(f"unknown inception metrics {unknown}; choose from {list(METRIC_NAMES)}")
        self._extractor = [extractor]  # a list hides it from state_dict / parameters()
        self.feature_extractor_id = feature_extractor_id
        self.batch_size = batch_size
        self.seed = seed
        self.metrics = nn.ModuleDict()
        if extractor is None or not names:
            return
        num_features, num_logits = self._probe(extractor)
        self.real_store = _FeatureStore(**metric_kwargs)
        if "fid" in names:
            self.metrics["fid"] = FrechetInceptionDistance(
                feature=_PassThrough(num_features), reset_real_features=False, **metric_kwargs)
        if "kid" in names:
            self.metrics["kid"] = _SeededKID(
                seed=seed, feature=_PassThrough(num_features), subsets=kid_subsets,
                subset_size=kid_subset_size, reset_real_features=False, **metric_kwargs)
        if "is" in names:
            self.metrics["is"] = _SeededIS(seed=seed, feature=_PassThrough(num_logits), splits=is_splits,
                                           **metric_kwargs)

    @staticmethod
    def _probe(extractor: nn.Module) -> tuple[int, int]:
        inner = getattr(extractor, "module", extractor)
        if isinstance(inner, FeatureExtractorInceptionV3):
            return 2048, 1008
        with torch.no_grad():
            feats, logits = extractor(torch.zeros(2, 3, _PROBE_RESOLUTION, _PROBE_RESOLUTION, dtype=torch.uint8))
        return feats.shape[1], logits.shape[1]

    # --- mapping of metrics -------------------------------------------------------------
    def __getitem__(self, name: str) -> Metric:
        return self.metrics[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics.keys())

    def __len__(self) -> int:
        return len(self.metrics)

    def __contains__(self, name: object) -> bool:
        return name in self.metrics

    def keys(self):
        return self.metrics.keys()

    def values(self):
        return self.metrics.values()

    def items(self):
        return self.metrics.items()

    @property
    def available(self) -> bool:
        return len(self.metrics) > 0

    @property
    def extractor(self) -> nn.Module | None:
        return self._extractor[0]

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if self._extractor[0] is not None:
            self._extractor[0]._apply(fn)
        return self

    # --- metric API -------------------------------------------------------------------
    @torch.no_grad()
    def features(self, images: Tensor) -> dict[str, Tensor]:
        """``{"features": (N, D), "logits": (N, K)}`` of images in [-1, 1] (or uint8), float32."""
        if self.extractor is None:
            raise RuntimeError("no feature extractor: the Inception weights were not available")
        param = next(iter(self.extractor.parameters()), None)
        device = param.device if param is not None else images.device
        images = as_rgb(to_uint8(images)).to(device)
        feats, logits = [], []
        with full_precision(device):
            for chunk in images.split(self.batch_size):
                f, lg = self.extractor(chunk)
                feats.append(f.float())
                logits.append(lg.float())
        return {"features": torch.cat(feats), "logits": torch.cat(logits)}

    def update(self, images: Tensor, real: bool) -> None:
        """Add a batch of images (N, C, H, W) in [-1, 1] (or uint8) to the real or fake side."""
        if not self.available:
            return
        self.update_features(self.features(images), real)

    def update_features(self, features: Mapping[str, Tensor], real: bool) -> None:
        """Add already-extracted ``features()`` output to the real or fake side."""
        if not self.available:
            return
        feats = features["features"]
        if real:
            self.real_store.update(feats)
        for name, metric in self.metrics.items():
            if name == "is":
                if not real:
                    metric.update(features["logits"])
            else:
                metric.update(feats, real=real)

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name, metric in self.metrics.items():
            value = metric.compute()
            if name == "fid":
                out["fid"] = value.float()
            else:
                out[f"{name}_mean"], out[f"{name}_std"] = value[0].float(), value[1].float()
        return out

    def reset(self, real: bool = False) -> None:
        """Clear the fake side (and the real side too if ``real``)."""
        for metric in self.metrics.values():
            if real and hasattr(metric, "reset_real_features"):
                metric.reset_real_features = True
                try:
                    metric.reset()
                finally:
                    metric.reset_real_features = False
            else:
                metric.reset()
        if real and self.available:
            self.real_store.reset()

    def real_statistics(self) -> dict[str, Tensor]:
        """``{"real_features": (N, D)}`` from all ranks, on the CPU (collective under DDP)."""
        if not self.available:
            return {}
        store = self.real_store
        with store.sync_context(should_sync=store.sync_on_compute, should_unsync=True):
            state = store.features
            feats = dim_zero_cat(state) if not isinstance(state, list) or state else torch.empty(0)
            return {"real_features": feats.detach().cpu().clone()}

    def load_real_statistics(self, stats: Mapping[str, Tensor]) -> None:
        """Replace the real side by ``real_statistics()`` output (rank 0 holds it all)."""
        if not self.available:
            return
        feats = stats["real_features"]
        if feats.dim() != 2:
            raise ValueError(f"real_features must be (N, D); got {tuple(feats.shape)}")
        rank, _ = dist_rank_world()
        if rank != 0:  # others hold an empty (0, D) slice so the cat-gather still works
            feats = feats[:0]
        self.reset(real=True)
        feats = feats.to(self.real_store.device)
        self.update_features({"features": feats, "logits": feats[:, :0]}, real=True)


def build_inception_metrics(
    names: Sequence[str] = METRIC_NAMES,
    weights_path: str | os.PathLike | None = None,
    kid_subset_size: int = 1000,
    *,
    kid_subsets: int = 100,
    is_splits: int = 10,
    feature_extractor: str = INCEPTION,
    seed: int = 0,
    batch_size: int = 64,
    **metric_kwargs: Any,
) -> InceptionMetrics:
    """FID / KID / IS (any of ``"fid", "kid", "is"``) on one shared feature extractor.

    ``weights_path`` is ``metrics.inception_weights``: an Inception state dict (or, with
    ``feature_extractor="module"``, a whole saved module). With None, the weights come from the
    torch.hub cache or are downloaded there; offline, one warning is emitted and the returned
    ``InceptionMetrics`` is empty. ``metric_kwargs`` go to every torchmetrics ``Metric``
    (e.g. ``sync_on_compute``, ``process_group``). ``seed`` fixes KID subsets and IS splits.
    Use ``result.feature_extractor_id`` as ``Protocol.feature_extractor``.

    Raises:
        FileNotFoundError: ``weights_path`` does not exist.
        ValueError: the file is not an Inception state dict / module, or unknown names.
    """
    unknown = sorted(set(names) - set(METRIC_NAMES))
    if unknown:
        raise ValueError(f"unknown inception metrics {unknown}; choose from {list(METRIC_NAMES)}")
    loaded = load_feature_extractor(feature_extractor, weights_path) if names else None
    extractor, ident = loaded if loaded is not None else (None, None)
    return InceptionMetrics(extractor, ident, names, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets,
                            is_splits=is_splits, seed=seed, batch_size=batch_size, **metric_kwargs)
