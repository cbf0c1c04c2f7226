"""FID, KID and IS equal torch-fidelity's ``calculate_metrics`` on the same two folders of images.

The Inception test uses a seeded random InceptionV3 in torch-fidelity's own weights format (the
state dict its ``FeatureExtractorInceptionV3`` loads from ``feature_extractor_weights_path``), so it
needs no download while both sides run the real extractor: its TF1-compatible bilinear resize, the
``2048`` features and the ``logits_unbiased`` logits. To keep CPU time low both sides resize to
75 px (InceptionV3's smallest input) instead of 299: one class attribute, the same code path.
The other tests check ``python -m t2f.evaluate images=... real_images=...`` and the training
metrics (``MetricSuite``) against torch-fidelity on a small stub extractor registered in it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_fidelity
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from PIL import Image
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from t2f.evaluate import evaluate
from t2f.metrics.inception import INCEPTION_WEIGHTS_FILENAME, image_files, score_image_folders
from tests.conftest import CONF
from tests.helpers import StubExtractor

N = 20  # images per folder
OPTIONS = dict(kid_subset_size=10, kid_subsets=10, is_splits=4)
SMALL_INPUT = 75

pytestmark = pytest.mark.usefixtures("one_thread")  # small batches: one thread is faster


def _image(rng: np.random.RandomState, blob: int, noise: float) -> np.ndarray:
    """A smooth random colour field (blob x blob cells) plus texture: uint8 (32, 32, 3)."""
    low = Image.fromarray((rng.rand(blob, blob, 3) * 255).astype(np.uint8))
    img = np.asarray(low.resize((32, 32), Image.BILINEAR), float) + noise * rng.randn(32, 32, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_images(folder: Path, n: int, seed: int, blob: int, noise: float) -> None:
    """n images by ``_image``, a few of them in the other forms a folder may hold."""
    folder.mkdir()
    rng = np.random.RandomState(seed)
    for i in range(n):
        img = Image.fromarray(_image(rng, blob, noise))
        if i == 1:
            img.convert("L").save(folder / f"{i:03d}.png")  # grayscale: read as RGB
        elif i == 2:
            img.convert("RGBA").save(folder / f"{i:03d}.png")  # alpha: dropped
        elif i == 3:
            img.save(folder / f"{i:03d}.PNG")  # extensions in any case
        else:
            img.save(folder / f"{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    img.save(folder / "sub" / "deeper.png")  # subfolders are not read


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("images")
    _write_images(root / "generated", N, seed=1, blob=4, noise=30.0)
    _write_images(root / "real", N, seed=2, blob=6, noise=10.0)
    return root / "generated", root / "real"


def _random_inception_state(seed: int = 0, live: int = 8) -> dict[str, torch.Tensor]:
    """torch-fidelity's InceptionV3 state dict with seeded random weights.

    Its batch-norm statistics are those of a batch of images like the test's (as after training),
    so that features and logits vary from image to image and the metrics are far from trivial.
    Only ``live`` channels of each of the last block's 6 branches are kept (their batch norm zeroes
    the others): FID's eigenvalues of a 2048 x 2048 product, on both sides, then take a second
    instead of half a minute, as LAPACK's balancing sets the zero rows aside.
    """

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # nothing to load yet: we make the weights
            return None

    with torch.random.fork_rng(), pytest.MonkeyPatch.context() as mp:
        torch.manual_seed(seed)
        mp.setattr("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {})
        net = _Unloaded("inception-v3-compat", ["2048"])
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # running statistics = those of the batch seen
    rng = np.random.RandomState(seed)
    batch = np.stack([_image(rng, blob, noise) for blob, noise in ((4, 30.0), (6, 10.0)) for _ in range(8)])
    net.INPUT_IMAGE_SIZE = SMALL_INPUT
    net.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the one_thread fixture, for this module-scoped one
    try:
        with torch.no_grad():
            net(torch.from_numpy(batch).permute(0, 3, 1, 2))
    finally:
        torch.set_num_threads(threads)
    for branch in ("branch1x1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_3a", "branch3x3dbl_3b",
                   "branch_pool"):
        bn = getattr(net.Mixed_7c, branch).bn
        bn.weight.data[live:] = 0.0
        bn.bias.data[live:] = 0.0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net.fc.weight.data.normal_(0.0, 0.1)
    return net.state_dict()


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inception") / INCEPTION_WEIGHTS_FILENAME
    torch.save(_random_inception_state(), path)
    return path


def _reference(generated: Path, real: Path, kid_subset_size: int, kid_subsets: int, is_splits: int,
               **kwargs) -> dict[str, float]:
    """``torch_fidelity.calculate_metrics`` on the two folders, under t2f's names."""
    out = torch_fidelity.calculate_metrics(
        input1=str(generated), input2=str(real), fid=True, kid=True, isc=True, kid_subset_size=kid_subset_size,
        kid_subsets=kid_subsets, isc_splits=is_splits, cuda=False, cache=False, verbose=False, save_cpu_ram=True,
        **kwargs)
    return {"fid": out[torch_fidelity.KEY_METRIC_FID],
            "kid_mean": out[torch_fidelity.KEY_METRIC_KID_MEAN], "kid_std": out[torch_fidelity.KEY_METRIC_KID_STD],
            "is_mean": out[torch_fidelity.KEY_METRIC_ISC_MEAN], "is_std": out[torch_fidelity.KEY_METRIC_ISC_STD]}


def _assert_equal(got: dict[str, float], expected: dict[str, float]) -> None:
    assert got.keys() == expected.keys()
    assert got["fid"] == pytest.approx(expected["fid"], rel=1e-5)  # statistics from float64 sums
    for name in ("kid_mean", "kid_std", "is_mean", "is_std"):  # same features, subsets and splits
        assert got[name] == pytest.approx(expected[name], rel=1e-6), name


def test_inception_folder_metrics_equal_torch_fidelity(folders: tuple[Path, Path], inception_weights: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", SMALL_INPUT)
    generated, real = folders
    files = image_files(generated)
    assert len(files) == N and files == sorted(files) and files[3].endswith("003.PNG")
    expected = _reference(generated, real, feature_extractor_weights_path=str(inception_weights), **OPTIONS)
    got = score_image_folders(generated, real, inception_weights, **OPTIONS)
    # far from trivial, so that equality means something
    assert expected["fid"] > 10 and expected["kid_mean"] > 0.1 and expected["is_mean"] > 1.2, expected
    _assert_equal(got, expected)


# --- the command line and the training metrics, on a stub extractor torch-fidelity runs too ----

class _FidelityStub(FeatureExtractorBase):
    """tests.helpers.StubExtractor as a torch-fidelity feature extractor."""

    def __init__(self, name: str, features_list: list[str], **kwargs) -> None:
        super().__init__(name, features_list)
        self.net = StubExtractor()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats, logits = self.net(x)
        return tuple({"feats": feats, "logits": logits}[name] for name in self.features_list)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return "feats", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "logits" if metric == "isc" else "feats"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)


@pytest.fixture(scope="module")
def stub_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stub") / "stub.pt"
    torch.save(StubExtractor(), path)
    return path


def _evaluate_config(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("evaluate", overrides=overrides)


def test_evaluate_scores_two_folders_like_torch_fidelity(folders: tuple[Path, Path], stub_path: Path,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FEATURE_EXTRACTORS_REGISTRY, "t2f-test-stub", _FidelityStub)
    generated, real = folders
    out = tmp_path / "scores.json"
    report = evaluate(_evaluate_config([
        f"images={generated}", f"real_images={real}", "metrics=fid", "metrics.feature_extractor=module",
        f"metrics.inception_weights={stub_path}", "metrics.inception.kid_subsets=10",
        f"metrics.inception.is_splits={OPTIONS['is_splits']}", f"out={out}", "device=cpu"]))
    assert json.loads(out.read_text()) == {k: v for k, v in report.items() if k != "out"}
    assert report["num_images"] == report["num_real"] == N
    assert report["options"]["kid_subset_size"] == N  # 1000 in conf/metrics/fid.yaml, clamped to the counts
    assert "torch_fidelity.calculate_metrics(input1=" in report["reference"]
    expected = _reference(generated, real, feature_extractor="t2f-test-stub", kid_subset_size=N, kid_subsets=10,
                          is_splits=OPTIONS["is_splits"])
    names = {"fid": "fid", "kid_mean": "kid", "kid_std": "kid_std", "is_mean": "is", "is_std": "is_std"}
    _assert_equal({k: report["metrics"][v] for k, v in names.items()}, expected)


def test_training_suite_numbers_equal_torch_fidelity_on_its_images(tmp_path: Path, stub_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics callback's and ``t2f.evaluate ckpt=...``'s FID/KID/IS: generated images in
    several batches and the real subset, saved as PNG in sample order, scored by torch-fidelity."""
    from t2f.data.synthetic import SyntheticDataModule
    from t2f.metrics.common import to_uint8
    from t2f.metrics.suite import MetricSuite, _items, _resize, _split, _subset
    from tests.helpers import StubGenerator

    monkeypatch.setitem(FEATURE_EXTRACTORS_REGISTRY, "t2f-test-stub", _FidelityStub)
    dm = SyntheticDataModule(root=str(tmp_path.parent / "t2f-cache" / "synthetic"), size=96, val_size=32,
                             resolution=32)
    m, n_real, options = 10, 12, dict(kid_subset_size=6, kid_subsets=5, is_splits=3)
    suite = MetricSuite(inception=options, num_samples=m, num_real=n_real, batch_size=4,
                        cache_dir=str(tmp_path / "metrics"), inception_weights=str(stub_path),
                        feature_extractor="module")
    generator = StubGenerator(16)
    values = suite.evaluate(generator, dm).values
    fakes = generator.generate(generator.sample_inputs(m, generator=torch.Generator().manual_seed(0)))
    real_set = _split(dm, "train")
    reals = _resize(_items(real_set, _subset(len(real_set), n_real, 0))["image"], 16)
    for name, images in (("fake", fakes), ("real", reals)):
        (tmp_path / name).mkdir()
        for i, image in enumerate(to_uint8(images)):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / name / f"{i:03d}.png")
    expected = _reference(tmp_path / "fake", tmp_path / "real", feature_extractor="t2f-test-stub", **options)
    names = {"fid": "fid", "kid_mean": "kid", "kid_std": "kid_std", "is_mean": "is", "is_std": "is_std"}
    _assert_equal({k: values[v] for k, v in names.items()}, expected)


def test_folder_scoring_errors_say_what_to_change(folders: tuple[Path, Path], stub_path: Path,
                                                  tmp_path: Path) -> None:
    generated, real = folders
    stub = dict(weights_path=stub_path, feature_extractor="module")
    with pytest.raises(FileNotFoundError, match="missing: no such folder of images"):
        score_image_folders(tmp_path / "missing", real, **stub)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no png/jpg/jpeg images"):
        score_image_folders(tmp_path / "empty", real, **stub)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (32, 32)).save(mixed / "a.png")
    Image.new("RGB", (16, 24)).save(mixed / "b.png")
    with pytest.raises(ValueError, match="b.png is 16x24 but .*a.png is 32x32: .*resize"):
        score_image_folders(mixed, None, names=["is"], is_splits=1, **stub)
    (mixed / "b.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="b.png could not be read as an image"):
        score_image_folders(mixed, None, names=["is"], is_splits=1, **stub)
    with pytest.raises(ValueError, match="KID subset size 100 exceeds .*lower metrics.inception.kid_subset_size"):
        score_image_folders(generated, real, kid_subset_size=100, **stub)
    with pytest.raises(ValueError, match="add metrics=fid"):  # the default metrics=swd
        evaluate(_evaluate_config([f"images={generated}", f"real_images={real}"]))
    with pytest.raises(ValueError, match="give ckpt=PATH .* or images=DIR real_images=DIR"):
        evaluate(_evaluate_config([]))
