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
  hold and run its own copy of the network, so none of them is used.

So this module builds the extractor once (``FeatureExtractorInceptionV3`` with features
``2048`` and ``logits_unbiased``, loading from a local file that it resolves itself), runs it
once per batch, and keeps only what each metric needs in small torchmetrics ``Metric``s, which
own the DDP reduction: FID's float64 sums of the features and of their outer products (summed
over ranks), and KID's features and IS's logits with their sample numbers (gathered, "cat").

The numbers are torch-fidelity's: ``compute`` passes the gathered states to its own
``fid_statistics_to_metric``, ``kid_features_to_metric`` and ``isc_features_to_metric`` with its
seed (``rng_seed=2020``), so that for the same images FID, KID and IS equal
``torch_fidelity.calculate_metrics(input1=generated, input2=real, fid=True, kid=True, isc=True)``
(IS is of ``input1``; FID to ~1e-6 relative, its statistics coming from float64 sums; KID and IS
exactly). KID subsets and IS splits depend on the order of the images, so each row carries its
sample number (``index``: its place in the folder, among the generated samples, in the real
subset) and ``compute`` sorts by it: the numbers do not depend on the batching or on the number
of processes. torch-fidelity's KID runs in float32 NumPy on the CPU (100 subsets of 1000 images
take seconds on a many-core machine); it is kept as is for exact equality.

``score_image_folders(generated_dir, real_dir, weights)`` reads two folders exactly as
torch-fidelity does (its file listing and ``ImagesPathDataset``: PIL -> RGB uint8, no resize but
the extractor's own) and returns the three metrics; ``python -m t2f.evaluate images=DIR
real_images=DIR metrics=fid`` is its command line.

With no weights file and no internet, ``build_inception_metrics`` emits one
``InceptionWeightsUnavailableWarning`` (which file, where to get it, where to put it) and
returns an empty ``InceptionMetrics``; the run goes on with the other metrics.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import ItemsView, Iterator, KeysView, Mapping, Sequence, ValuesView
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch_fidelity.datasets import ImagesPathDataset
from torch_fidelity.defaults import DEFAULTS as FIDELITY_DEFAULTS
from torch_fidelity.feature_extractor_inceptionv3 import (
    URL_INCEPTION_V3,
    FeatureExtractorInceptionV3,
)
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
from torch_fidelity.metric_isc import (
    KEY_METRIC_ISC_MEAN,
    KEY_METRIC_ISC_STD,
    isc_features_to_metric,
)
from torch_fidelity.metric_kid import (
    KEY_METRIC_KID_MEAN,
    KEY_METRIC_KID_STD,
    kid_features_to_metric,
)
from torch_fidelity.utils import glob_samples_paths
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from t2f.metrics.common import as_rgb, dist_rank_world, full_precision, to_uint8

__all__ = [
    "INCEPTION_WEIGHTS_FILENAME",
    "INCEPTION_WEIGHTS_URL",
    "REPORTED_NAMES",
    "InceptionMetrics",
    "InceptionWeightsUnavailableWarning",
    "build_inception_metrics",
    "check_metric_names",
    "default_inception_weights_path",
    "image_files",
    "load_feature_extractor",
    "score_image_folders",
]

INCEPTION_WEIGHTS_URL: str = URL_INCEPTION_V3
# InceptionMetrics.compute()'s keys -> the names t2f reports (metrics/fid, metrics/kid, ...)
REPORTED_NAMES = {"fid": "fid", "kid_mean": "kid", "kid_std": "kid_std", "is_mean": "is", "is_std": "is_std"}
INCEPTION_WEIGHTS_FILENAME: str = URL_INCEPTION_V3.rsplit("/", 1)[-1]  # weights-inception-2015-12-05-6726825d.pth
INCEPTION = "inception-v3-compat"
MODULE = "module"
METRIC_NAMES = ("fid", "kid", "is")
METRIC_KEYS = {"fid": ("fid",), "kid": ("kid_mean", "kid_std"), "is": ("is_mean", "is_std")}  # compute()'s keys
_PROBE_RESOLUTION = 64
RNG_SEED: int = int(FIDELITY_DEFAULTS["rng_seed"])  # 2020: torch-fidelity's seed for KID subsets and IS splits
IMAGE_EXTENSIONS: str = FIDELITY_DEFAULTS["samples_find_ext"]  # "png,jpg,jpeg", as torch-fidelity lists a folder
_WARNED: set[str] = set()


class InceptionWeightsUnavailableWarning(UserWarning):
    """The Inception weights could not be found or downloaded; FID/KID/IS are skipped."""


def check_metric_names(names: Sequence[str]) -> None:
    """Raise ``ValueError`` for names other than ``"fid"``, ``"kid"`` and ``"is"``."""
    unknown = sorted(set(names) - set(METRIC_NAMES))
    if unknown:
        raise ValueError(f"unknown inception metrics {unknown}; choose from {list(METRIC_NAMES)}")


def default_inception_weights_path() -> Path:
    """Where torch-fidelity (through ``torch.hub``) keeps the downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILENAME


def _download_inception_weights(dst: Path) -> None:
    """Download torch-fidelity's InceptionV3 weights to ``dst`` (raises when offline)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    import sys

    torch.hub.download_url_to_file(INCEPTION_WEIGHTS_URL, str(dst), progress=sys.stderr.isatty())  # 92 MB


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


def _count(state: Tensor | list[Tensor]) -> int:
    return int(state.shape[0]) if isinstance(state, Tensor) else sum(int(t.shape[0]) for t in state)


def _in_order(features: Tensor | list[Tensor], index: Tensor | list[Tensor]) -> Tensor:
    """Rows sorted by sample number: torch-fidelity's input order, whatever the batching or DDP gather."""
    feats, idx = dim_zero_cat(features), dim_zero_cat(index)
    return feats[torch.argsort(idx.to(feats.device), stable=True)]


class _FeatureStore(Metric):
    """Rows (features or logits) with their sample numbers, cat-gathered over ranks, since KID,
    IS and the real-statistics cache need every row in torch-fidelity's order, not a reduction."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"compute_with_cache": False, **kwargs})  # no second copy of every row
        self.add_state("features", default=[], dist_reduce_fx="cat")
        self.add_state("index", default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor, index: Tensor) -> None:
        self.features.append(features)
        self.index.append(index)

    def compute(self) -> Tensor:
        """All ranks' rows in sample order, on the CPU; (0,) when there are none."""
        if not _count(self.features):
            return torch.empty(0)
        return _in_order(self.features, self.index).cpu()


class _Moments(Metric):
    """FID's state for one side: float64 sums of the features and of their outer products, summed
    over ranks, so the mean and covariance need no stored features."""

    full_state_update = False

    def __init__(self, num_features: int, **kwargs: Any) -> None:
        super().__init__(**{"compute_with_cache": False, **kwargs})
        self.add_state("total", torch.zeros(num_features, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("outer", torch.zeros(num_features, num_features, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, features: Tensor) -> None:
        features = features.double()
        self.total += features.sum(dim=0)
        self.outer += features.t().mm(features)
        self.count += features.shape[0]

    def compute(self) -> dict[str, Any]:
        """torch-fidelity's ``{"mu", "sigma"}`` (``np.cov``, ddof 1), with the count ``n``."""
        n = int(self.count)
        mu = self.total / n
        sigma = (self.outer - n * torch.outer(mu, mu)) / (n - 1)
        return {"mu": mu.cpu().numpy(), "sigma": sigma.cpu().numpy(), "n": n}


class InceptionMetrics(nn.Module):
    """FID / KID / IS on one shared feature extractor; a read-only mapping name -> the torchmetrics
    ``Metric`` that holds that metric's generated side (FID's sums, KID's features, IS's logits).

    ``update(images, real, index)`` takes images in [-1, 1] (or uint8), runs the extractor once
    and feeds every metric (IS sees fakes only). ``index`` numbers the images within their side
    (KID and IS, like torch-fidelity, depend on the order); without it, each process numbers its
    images in update order and the processes interleave (rank r's k-th image is k * world + r, as
    a ``DistributedSampler`` deals them). ``compute()`` -> ``{"fid", "kid_mean", "kid_std",
    "is_mean", "is_std"}`` for the metrics built (or those in ``names``), as 0-dim float tensors,
    equal to torch-fidelity's ``calculate_metrics`` with generated images as ``input1``; under DDP
    call update and compute on every rank. ``seed`` is torch-fidelity's ``rng_seed``;
    ``kid_subset_size`` and ``is_splits`` may be changed before ``compute``. ``reset()`` clears
    the fake side and keeps the real one (pass ``real=True`` to clear both). ``real_statistics()``
    / ``load_real_statistics()`` export and restore the real side (in sample order) for the disk
    cache of ``t2f.metrics.protocol``.

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
        seed: int = RNG_SEED,
        batch_size: int = 64,
        **metric_kwargs: Any,
    ) -> None:
        super().__init__()
        check_metric_names(names)
        self._extractor = [extractor]  # a list hides it from state_dict / parameters()
        self.feature_extractor_id = feature_extractor_id
        self.kid_subset_size, self.kid_subsets, self.is_splits = kid_subset_size, kid_subsets, is_splits
        self.seed = seed
        self.batch_size = batch_size
        self._seen = {True: 0, False: 0}  # images numbered so far on this process, per side
        self.metrics = nn.ModuleDict()
        self.real_moments: _Moments | None = None
        if extractor is None or not names:
            return
        self.real_store = _FeatureStore(**metric_kwargs)  # KID's real side and real_statistics()
        for name in (n for n in METRIC_NAMES if n in names):
            if name == "fid":
                num_features = self._probe(extractor)
                self.real_moments = _Moments(num_features, **metric_kwargs)
                self.metrics[name] = _Moments(num_features, **metric_kwargs)
            else:
                self.metrics[name] = _FeatureStore(**metric_kwargs)

    @staticmethod
    def _probe(extractor: nn.Module) -> int:
        if isinstance(getattr(extractor, "module", extractor), FeatureExtractorInceptionV3):
            return 2048
        with torch.no_grad():
            feats, _ = extractor(torch.zeros(2, 3, _PROBE_RESOLUTION, _PROBE_RESOLUTION, dtype=torch.uint8))
        return feats.shape[1]

    # --- mapping of metrics -------------------------------------------------------------
    def __getitem__(self, name: str) -> Metric:
        return self.metrics[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics.keys())

    def __len__(self) -> int:
        return len(self.metrics)

    def __contains__(self, name: object) -> bool:
        return name in self.metrics

    def keys(self) -> KeysView[str]:
        return self.metrics.keys()

    def values(self) -> ValuesView[Metric]:
        return self.metrics.values()

    def items(self) -> ItemsView[str, Metric]:
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

    def update(self, images: Tensor, real: bool, index: Tensor | Sequence[int] | None = None) -> None:
        """Add a batch of images (N, C, H, W) in [-1, 1] (or uint8) to the real or fake side;
        ``index``: their sample numbers (see the class docstring)."""
        if not self.available:
            return
        self.update_features(self.features(images), real, index)

    def update_features(self, features: Mapping[str, Tensor], real: bool,
                        index: Tensor | Sequence[int] | None = None) -> None:
        """Add already-extracted ``features()`` output to the real or fake side."""
        if not self.available:
            return
        feats = features["features"]
        index = self._sample_numbers(feats.shape[0], real) if index is None else torch.as_tensor(index)
        index = index.to(device=feats.device, dtype=torch.long)
        if index.shape != (feats.shape[0],):
            raise ValueError(f"index must hold one sample number per image: {tuple(index.shape)} for "
                             f"{feats.shape[0]} images")
        if real:
            self.real_store.update(feats, index)
            if self.real_moments is not None:
                self.real_moments.update(feats)
            return
        for name, metric in self.metrics.items():
            if name == "fid":
                metric.update(feats)
            else:
                metric.update(features["logits"] if name == "is" else feats, index)

    def _sample_numbers(self, n: int, real: bool) -> Tensor:
        """Default numbering: this process's k-th image is k * world + rank (interleaved ranks)."""
        rank, world = dist_rank_world()
        start = self._seen[real]
        self._seen[real] += n
        return torch.arange(start, start + n) * world + rank

    def compute(self, dtype: torch.dtype = torch.float32, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        """The values of the metrics built (or of ``names`` among them) as 0-dim tensors of ``dtype``
        (float64 keeps torch-fidelity's exact floats)."""
        out: dict[str, Tensor] = {}
        for name in self.metrics if names is None else names:
            if name not in self.metrics:
                raise ValueError(f"{name!r} was not built; these were: {list(self.metrics)}")
            values = {"fid": self._fid, "kid": self._kid, "is": self._is}[name]()
            out.update({key: torch.tensor(value, dtype=dtype) for key, value in zip(METRIC_KEYS[name], values)})
        return out

    def _fid(self) -> tuple[float]:
        fake, real = self.metrics["fid"].compute(), self.real_moments.compute()
        if min(fake["n"], real["n"]) < 2:
            raise ValueError(f"FID needs at least 2 real and 2 generated images, got {real['n']} and {fake['n']}")
        return (fid_statistics_to_metric(fake, real, verbose=False)[KEY_METRIC_FID],)

    def _kid(self) -> tuple[float, float]:
        fake, real = self.metrics["kid"].compute(), self.real_store.compute()
        if min(len(fake), len(real)) < self.kid_subset_size:
            raise ValueError(
                f"KID subset size {self.kid_subset_size} exceeds the number of images ({len(real)} real, "
                f"{len(fake)} generated); lower metrics.inception.kid_subset_size")
        out = kid_features_to_metric(fake.float(), real.float(), kid_subsets=self.kid_subsets,
                                     kid_subset_size=self.kid_subset_size, rng_seed=self.seed, verbose=False)
        return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]

    def _is(self) -> tuple[float, float]:
        logits = self.metrics["is"].compute()
        if len(logits) < self.is_splits:
            raise ValueError(f"IS with {self.is_splits} splits needs at least {self.is_splits} generated images, "
                             f"got {len(logits)}; lower metrics.inception.is_splits")
        out = isc_features_to_metric(logits.float(), self.is_splits, shuffle=True, rng_seed=self.seed)
        return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]

    def reset(self, real: bool = False) -> None:
        """Clear the fake side (and the real side too if ``real``)."""
        self._seen[False] = 0
        for metric in self.metrics.values():
            metric.reset()
        if real and self.available:
            self._seen[True] = 0
            self.real_store.reset()
            if self.real_moments is not None:
                self.real_moments.reset()

    def real_statistics(self) -> dict[str, Tensor]:
        """``{"real_features": (N, D)}`` from all ranks, on the CPU (collective under DDP)."""
        if not self.available:
            return {}
        return {"real_features": self.real_store.compute()}

    def load_real_statistics(self, stats: Mapping[str, Tensor]) -> None:
        """Replace the real side by ``real_statistics()`` output (rank 0 holds it all)."""
        if not self.available:
            return
        feats = stats["real_features"]
        if feats.dim() != 2:
            raise ValueError(f"real_features must be (N, D); got {tuple(feats.shape)}")
        rank, _ = dist_rank_world()
        total = feats.shape[0]
        if rank != 0:  # others hold an empty (0, D) slice so the cat-gather still works
            feats = feats[:0]
        self.reset(real=True)
        feats = feats.to(self.real_store.device)
        self.update_features({"features": feats, "logits": feats[:, :0]}, real=True,
                             index=torch.arange(feats.shape[0]))
        self._seen[True] = total  # images added later are numbered after these


def build_inception_metrics(
    names: Sequence[str] = METRIC_NAMES,
    weights_path: str | os.PathLike | None = None,
    kid_subset_size: int = 1000,
    *,
    kid_subsets: int = 100,
    is_splits: int = 10,
    feature_extractor: str = INCEPTION,
    seed: int = RNG_SEED,
    batch_size: int = 64,
    **metric_kwargs: Any,
) -> InceptionMetrics:
    """FID / KID / IS (any of ``"fid", "kid", "is"``) on one shared feature extractor.

    ``weights_path`` is ``metrics.inception_weights``: an Inception state dict (or, with
    ``feature_extractor="module"``, a whole saved module). With None, the weights come from the
    torch.hub cache or are downloaded there; offline, one warning is emitted and the returned
    ``InceptionMetrics`` is empty. ``metric_kwargs`` go to every torchmetrics ``Metric``
    (e.g. ``sync_on_compute``, ``process_group``). ``seed`` fixes KID subsets and IS splits
    (torch-fidelity's ``rng_seed``, 2020 by default, as in its ``calculate_metrics``).
    Use ``result.feature_extractor_id`` as ``Protocol.feature_extractor``.

    Raises:
        FileNotFoundError: ``weights_path`` does not exist.
        ValueError: the file is not an Inception state dict / module, or unknown names.
    """
    check_metric_names(names)
    loaded = load_feature_extractor(feature_extractor, weights_path) if names else None
    extractor, ident = loaded if loaded is not None else (None, None)
    return InceptionMetrics(extractor, ident, names, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets,
                            is_splits=is_splits, seed=seed, batch_size=batch_size, **metric_kwargs)


# --- two folders of images, as torch-fidelity reads them --------------------------------------

def image_files(folder: str | os.PathLike) -> list[str]:
    """The images torch-fidelity takes from a folder: png/jpg/jpeg (any case) directly in it,
    sorted by real path (its ``glob_samples_paths``), so that KID/IS see them in its order."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of images")
    files = glob_samples_paths(str(path), False, IMAGE_EXTENSIONS, verbose=False)
    if not files:
        raise ValueError(f"{folder} holds no {IMAGE_EXTENSIONS.replace(',', '/')} images (subfolders are not read)")
    return files


def _read_image(dataset: ImagesPathDataset, i: int) -> Tensor:
    try:
        return dataset[i]
    except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{dataset.files[i]} could not be read as an image: {err}") from None


def _image_batches(files: Sequence[str], batch_size: int) -> Iterator[tuple[int, Tensor]]:
    """``(start, uint8 (N, 3, H, W))`` batches of ``files`` read by torch-fidelity's ``ImagesPathDataset``
    (PIL ``convert("RGB")`` -> uint8, no resize); decoded in threads (PIL releases the GIL)."""
    dataset = ImagesPathDataset(list(files))
    shape = None
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for start in range(0, len(files), batch_size):
            stop = min(start + batch_size, len(files))
            images = list(pool.map(lambda i: _read_image(dataset, i), range(start, stop)))
            for i, image in enumerate(images, start):
                shape = shape or tuple(image.shape)
                if tuple(image.shape) != shape:
                    raise ValueError(
                        f"{files[i]} is {image.shape[2]}x{image.shape[1]} but {files[0]} is {shape[2]}x{shape[1]}: "
                        f"torch-fidelity needs one size per folder; resize the images first")
            yield start, torch.stack(images)


def score_image_folders(
    images: str | os.PathLike,
    real_images: str | os.PathLike | None,
    weights_path: str | os.PathLike | None = None,
    *,
    names: Sequence[str] = METRIC_NAMES,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    is_splits: int = 10,
    seed: int = RNG_SEED,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    feature_extractor: str = INCEPTION,
) -> dict[str, float]:
    """FID / KID / IS of the images in folder ``images`` against folder ``real_images``.

    Equal to ``torch_fidelity.calculate_metrics(input1=images, input2=real_images, fid=True,
    kid=True, isc=True, feature_extractor_weights_path=weights_path, kid_subset_size=...,
    kid_subsets=..., isc_splits=..., rng_seed=seed)`` (IS is of ``images``), so that published
    numbers can be reproduced and t2f's numbers checked against the reference. ``real_images`` may
    be None when only IS is asked for. Returns ``{"fid", "kid_mean", "kid_std", "is_mean",
    "is_std"}`` for the metrics in ``names``.

    Raises:
        FileNotFoundError: a folder or the weights file is missing, or no weights and offline.
        ValueError: an empty folder, unreadable or differently sized images, bad options.
    """
    if not names:
        raise ValueError(f"choose metrics among {list(METRIC_NAMES)}")
    needs_real = bool({"fid", "kid"} & set(names))
    if needs_real and real_images is None:
        raise ValueError("FID and KID compare two folders: give the real images' folder too")
    folders = [(images, False)] + ([(real_images, True)] if needs_real else [])
    files = [(image_files(folder), real) for folder, real in folders]  # check both folders before the work
    metrics = build_inception_metrics(names, weights_path, kid_subset_size, kid_subsets=kid_subsets,
                                      is_splits=is_splits, feature_extractor=feature_extractor, seed=seed,
                                      batch_size=batch_size)
    if not metrics.available:
        raise FileNotFoundError(f"the Inception weights are not available: pass the path of "
                                f"{INCEPTION_WEIGHTS_FILENAME} (metrics.inception_weights=PATH)")
    metrics.to(device)
    for paths, real in files:
        for start, batch in _image_batches(paths, batch_size):
            metrics.update(batch, real=real, index=torch.arange(start, start + batch.shape[0]))
    return {k: float(v) for k, v in metrics.compute(torch.float64).items()}
