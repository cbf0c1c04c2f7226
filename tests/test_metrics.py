"""Tests for t2f.metrics: SWD, FID/KID/IS on a stub extractor, offline weights, protocol cache, DDP."""

from __future__ import annotations

import datetime
import json
import os
import socket
import urllib.error
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from t2f.metrics import (
    INCEPTION_WEIGHTS_FILENAME,
    InceptionWeightsUnavailableWarning,
    Protocol,
    SlicedWassersteinDistance,
    build_inception_metrics,
    cached_real_statistics,
    sliced_wasserstein_distance,
    statistics_path,
    to_uint8,
)
from t2f.metrics import inception as inception_mod
from t2f.metrics.swd import _pyr_up, extract_descriptors, laplacian_pyramid, pyramid_resolutions
from tests.helpers import StubExtractor


def _faces(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1]: low-frequency colour blobs plus a little texture."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=gen) * 2 - 1
    img = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    img = img + 0.15 * torch.randn(n, 3, size, size, generator=gen)
    return img.clamp(-1, 1)


def _noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=gen)).clamp(-1, 1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = 3
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@pytest.fixture(scope="module")
def stub_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("extractor") / "stub.pt"
    torch.save(StubExtractor(), path)
    return path


def _stub_metrics(stub_path: Path, names=("fid", "kid", "is"), **kw):
    kw.setdefault("kid_subset_size", 50)
    kw.setdefault("kid_subsets", 20)
    kw.setdefault("is_splits", 4)
    return build_inception_metrics(list(names), str(stub_path), feature_extractor="module", **kw)


def _values(metrics, real: torch.Tensor, fake: torch.Tensor, batch: int = 64) -> dict[str, float]:
    metrics.reset(real=True)
    for chunk in real.split(batch):
        metrics.update(chunk, real=True)
    for chunk in fake.split(batch):
        metrics.update(chunk, real=False)
    return {k: float(v) for k, v in metrics.compute().items()}


# --- image conversion ---------------------------------------------------------------------

def test_to_uint8_maps_range_with_rounding() -> None:
    x = torch.tensor([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 0, 128, 191, 255, 255]
    u = torch.randint(0, 255, (2, 3, 4, 4), dtype=torch.uint8)
    assert to_uint8(u) is u
    with pytest.raises(TypeError):
        to_uint8(torch.ones(2, dtype=torch.long))


# --- SWD ------------------------------------------------------------------------------------

def test_laplacian_pyramid_reconstructs_and_levels_follow_resolution() -> None:
    x = torch.rand(2, 3, 32, 32) * 255
    p = laplacian_pyramid(x, 2)
    assert [t.shape[-1] for t in p] == [32, 16]
    torch.testing.assert_close(p[0] + _pyr_up(p[1], (32, 32)), x, atol=1e-3, rtol=0)
    assert pyramid_resolutions(128) == [128, 64, 32, 16]
    assert pyramid_resolutions(16) == [16]
    with pytest.raises(ValueError, match="at least 16"):
        pyramid_resolutions(8)
    desc = extract_descriptors(_faces(3, 32), patches_per_image=5)
    assert desc.shape == (3, 2, 5, 3 * 7 * 7)


def test_swd_zero_for_identical_sets_and_grows_with_noise_and_blur() -> None:
    real = _faces(48, 32, seed=0)
    fast = dict(dir_repeats=1, dirs_per_repeat=64)  # fewer directions than the protocol, for speed
    same = sliced_wasserstein_distance(real, real.clone(), **fast)
    assert set(same) == {"swd_x1e3_32", "swd_x1e3_16", "swd_x1e3_avg"}
    assert all(abs(v) < 1e-6 for v in same.values())
    noise = [sliced_wasserstein_distance(real, _noisy(real, s), **fast)["swd_x1e3_avg"] for s in (0.1, 0.2, 0.4)]
    blur = [sliced_wasserstein_distance(real, _blur(real, s), **fast)["swd_x1e3_avg"] for s in (0.6, 1.0, 2.0)]
    assert noise[0] > 1 and noise[0] < noise[1] < noise[2], noise
    assert blur[0] > 1 and blur[0] < blur[1] < blur[2], blur


def test_swd_metric_matches_function_and_ignores_batching_and_order() -> None:
    real, fake = _faces(40, 16, seed=0), _faces(40, 16, seed=5)
    expected = sliced_wasserstein_distance(real, fake, seed=3)
    metric = SlicedWassersteinDistance(seed=3)
    for chunk in real.split(7):
        metric.update(chunk, real=True)
    for chunk in fake.flip(0).split(16):
        metric.update(chunk, real=False)
    got = {k: float(v) for k, v in metric.compute().items()}
    assert got.keys() == expected.keys()
    for k in got:
        assert got[k] == pytest.approx(expected[k], rel=1e-5)
    assert {k: float(v) for k, v in metric.compute().items()} == got  # repeated compute
    # A different seed is a different protocol: different patches and directions.
    assert sliced_wasserstein_distance(real, fake, seed=4)["swd_x1e3_avg"] != pytest.approx(got["swd_x1e3_avg"])
    with pytest.raises(ValueError, match="one resolution"):
        metric.update(_faces(2, 32), real=False)


def test_swd_real_statistics_round_trip_and_reset_keeps_reals() -> None:
    real, fake = _faces(24, 16, seed=0), _faces(24, 16, seed=2)
    a = SlicedWassersteinDistance(reset_real_features=False)
    a.update(real, real=True)
    a.update(fake, real=False)
    first = {k: float(v) for k, v in a.compute().items()}
    stats = a.real_statistics()
    assert stats["real_descriptors"].shape == (24, 1, 128, 147)
    a.reset()  # keeps the reals
    a.update(fake, real=False)
    assert {k: float(v) for k, v in a.compute().items()} == first
    b = SlicedWassersteinDistance()
    b.load_real_statistics(stats)
    b.update(fake, real=False)
    assert {k: float(v) for k, v in b.compute().items()} == pytest.approx(first)


# --- FID / KID / IS on a stub extractor ---------------------------------------------------

def test_fid_kid_zero_for_identical_sets_and_grow_with_noise(stub_path: Path) -> None:
    metrics = _stub_metrics(stub_path, kid_subset_size=100, kid_subsets=50)
    assert sorted(metrics) == ["fid", "is", "kid"] and metrics.available
    assert metrics.feature_extractor_id.startswith("module-")
    real = _faces(200, 16, seed=0)
    same = _values(metrics, real, real)
    assert abs(same["fid"]) < 1e-6
    assert same["is_mean"] >= 1.0
    fids, kids = [], []
    for sigma in (0.3, 0.6, 1.0):
        v = _values(metrics, real, _noisy(real, sigma))
        fids.append(v["fid"])
        kids.append(v["kid_mean"])
    assert fids[0] > 0.1 and all(a < b for a, b in zip(fids, fids[1:])), fids
    assert all(a < b for a, b in zip(kids, kids[1:])), kids
    # KID is an unbiased estimate on random subsets: around 0 (not exactly) for identical sets.
    assert abs(same["kid_mean"]) < 0.2 * kids[0], (same, kids)


def test_inception_metrics_deterministic_across_calls_builds_and_batching(stub_path: Path) -> None:
    real, fake = _faces(120, 16, seed=0), _noisy(_faces(120, 16, seed=0), 0.2)
    a = _values(_stub_metrics(stub_path), real, fake, batch=64)
    b = _values(_stub_metrics(stub_path), real, fake, batch=64)
    assert a == b
    # KID and IS depend on the order (as torch-fidelity's do): the same images given in reverse,
    # in other batches, each with its sample number, give the same numbers.
    c = _stub_metrics(stub_path)
    backwards = torch.arange(real.shape[0]).flip(0)
    for side, images in ((True, real), (False, fake)):
        for chunk, index in zip(images.flip(0).split(25), backwards.split(25)):
            c.update(chunk, real=side, index=index)
    assert {k: float(v) for k, v in c.compute().items()} == pytest.approx(a, rel=1e-4, abs=1e-6)
    m = _stub_metrics(stub_path)
    m.update(real, real=True)
    m.update(fake, real=False)
    assert {k: float(v) for k, v in m.compute().items()} == {k: float(v) for k, v in m.compute().items()}


def test_inception_real_statistics_round_trip(stub_path: Path) -> None:
    real, fake = _faces(80, 16, seed=0), _faces(80, 16, seed=3)
    m = _stub_metrics(stub_path)
    expected = _values(m, real, fake)
    stats = m.real_statistics()
    assert stats["real_features"].shape == (80, 24)
    m.reset()  # fake side only
    m.update(fake, real=False)
    assert {k: float(v) for k, v in m.compute().items()} == pytest.approx(expected)
    fresh = _stub_metrics(stub_path)
    fresh.load_real_statistics(stats)
    fresh.update(fake, real=False)
    assert {k: float(v) for k, v in fresh.compute().items()} == pytest.approx(expected, rel=1e-6)


def test_extractor_weights_stay_out_of_state_dict(stub_path: Path) -> None:
    m = _stub_metrics(stub_path)
    assert not any("conv1" in k for k in m.state_dict())
    assert m.to("cpu") is m


# --- the suite's registry: FID, KID and IS are separate measures on one Inception pass ------

def test_suite_runs_the_chosen_inception_metrics_on_one_extractor_pass(tmp_path: Path, stub_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from t2f.data.synthetic import SyntheticDataModule
    from t2f.metrics.inception import InceptionMetrics
    from t2f.metrics.measures import MEASURES
    from t2f.metrics.suite import MetricSuite
    from tests.helpers import StubGenerator

    assert [name for name in MEASURES if MEASURES[name][0] == "inception"] == ["fid", "kid", "is"]
    batches = []
    features = InceptionMetrics.features
    monkeypatch.setattr(InceptionMetrics, "features", lambda self, x: batches.append(len(x)) or features(self, x))
    config = {"_target_": "SyntheticDataModule", "size": 96, "val_size": 32, "resolution": 32}
    dm = SyntheticDataModule(root=str(tmp_path.parent / "t2f-cache" / "synthetic"), size=96, val_size=32,
                             resolution=32)
    generator = StubGenerator(16)

    def suite(names: list[str]) -> MetricSuite:
        return MetricSuite(inception=dict(names=names, kid_subset_size=6, kid_subsets=5, is_splits=3), num_samples=10,
                           num_real=12, batch_size=4, cache_dir=str(tmp_path / "metrics"),
                           inception_weights=str(stub_path), feature_extractor="module")

    everything = suite(["fid", "kid", "is"])
    result = everything.evaluate(generator, dm, config)
    assert batches == [4, 4, 4] + [4, 4, 2]  # one pass over the real subset, one per batch of fakes
    assert list(result.values) == ["fid", "kid", "kid_std", "is", "is_std"]
    assert len({p.key() for p in result.protocols.values()}) == 1
    batches.clear()
    assert everything.evaluate(generator, dm, config).values == result.values and batches == [4, 4, 2]
    for names, expected in ((["fid"], ["fid"]), (["is", "kid"], ["kid", "kid_std", "is", "is_std"])):
        batches.clear()
        chosen = suite(names)
        values = chosen.evaluate(generator, dm, config).values  # the real features: from the disk cache
        assert list(values) == expected and values == {k: result.values[k] for k in expected}
        assert sorted(chosen.inception_metrics()) == sorted(names) and batches == [4, 4, 2]
    with pytest.raises(ValueError, match="unknown inception metrics"):
        suite(["fid", "lpips"])


# --- Inception weights: local file, missing file, offline ---------------------------------

@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised state dict with the exact keys of torch-fidelity's InceptionV3."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    class _Unloaded(fe.FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):
            return None

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        net = _Unloaded("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("inception") / INCEPTION_WEIGHTS_FILENAME
    torch.save(net.state_dict(), path)
    return path


def test_inception_loads_from_local_weights_file(random_inception_weights: Path) -> None:
    metrics = build_inception_metrics(["is"], str(random_inception_weights), kid_subset_size=2)
    assert list(metrics) == ["is"]
    assert metrics.feature_extractor_id.startswith("inception-v3-compat-")
    net = metrics.extractor.module
    net.INPUT_IMAGE_SIZE = 75  # the real network, on a smaller input to keep the test fast
    feats = metrics.features(_faces(1, 16))
    assert feats["features"].shape == (1, 2048) and feats["logits"].shape == (1, 1008)


def test_inception_weights_file_with_wrong_content_is_a_clear_error(tmp_path: Path,
                                                                    random_inception_weights: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not an InceptionV3 state dict"):
        build_inception_metrics(["fid"], str(junk))
    partial = tmp_path / "partial.pth"
    state = torch.load(random_inception_weights, weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("Mixed_7c")}, partial)
    with pytest.raises(ValueError, match="missing keys"):
        build_inception_metrics(["fid"], str(partial))


def test_nonexistent_weights_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / INCEPTION_WEIGHTS_FILENAME
    with pytest.raises(FileNotFoundError, match="metrics.inception_weights=.*no such file"):
        build_inception_metrics(["fid"], str(missing))
    with pytest.raises(FileNotFoundError):
        build_inception_metrics(["fid"], str(missing), feature_extractor="module")
    with pytest.raises(ValueError, match="feature_extractor"):
        build_inception_metrics(["fid"], None, feature_extractor="inception-v4")
    with pytest.raises(ValueError, match="unknown inception metrics"):
        build_inception_metrics(["fid", "lpips"], None)


def test_offline_without_weights_warns_once_and_carries_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def offline(dst: Path) -> None:
        calls.append(dst)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(inception_mod, "_download_inception_weights", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(inception_mod, "_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = build_inception_metrics(["fid", "kid", "is"], None, kid_subset_size=10)
        again = build_inception_metrics(["fid"], None, kid_subset_size=10)
    ours = [w for w in caught if issubclass(w.category, InceptionWeightsUnavailableWarning)]
    assert len(ours) == 1 and len(calls) == 2
    text = str(ours[0].message)
    assert INCEPTION_WEIGHTS_FILENAME in text and "metrics.inception_weights=" in text
    assert "https://" in text and str(tmp_path / "hub" / "checkpoints") in text
    for m in (metrics, again):
        assert len(m) == 0 and not m.available
        m.update(_faces(4, 16), real=True)  # no-ops, no crash
        assert m.compute() == {}
        assert m.real_statistics() == {}


def test_weights_in_hub_cache_are_used_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        random_inception_weights: Path) -> None:
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    os.symlink(random_inception_weights, hub / "checkpoints" / INCEPTION_WEIGHTS_FILENAME)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def no_download(dst: Path) -> None:
        raise AssertionError("must not download when the file is cached")

    monkeypatch.setattr(inception_mod, "_download_inception_weights", no_download)
    assert list(build_inception_metrics(["is"], None)) == ["is"]


# --- protocol and cache -------------------------------------------------------------------

def _protocol(**kw) -> Protocol:
    base = dict(dataset="celeba", resolution=64, feature_extractor="inception-v3-compat-0123456789ab",
                num_real=10000, num_fake=10000, split="train", crop="center-178", resize="bilinear-antialias",
                options={"kid_subset_size": 1000})
    base.update(kw)
    return Protocol(**base)


def test_protocol_key_is_stable_and_changes_with_every_field() -> None:
    p = _protocol()
    assert p.key() == _protocol().key() and len(p.key()) == 16
    assert p.key() == Protocol(**{**p.to_dict(), "options": {"kid_subset_size": 1000}}).key()
    changes = dict(dataset="ffhq", resolution=128, feature_extractor="swd-laplacian-p128-k7-min16-seed0",
                   num_real=5000, num_fake=5000, split="test", crop="none", resize="lanczos",
                   options={"kid_subset_size": 100}, version=p.version + 1)
    assert set(changes) == {f for f in p.to_dict()}, "every field must be covered"
    keys = {p.key()} | {p.replace(**{name: value}).key() for name, value in changes.items()}
    assert len(keys) == len(changes) + 1
    assert "celeba/train at 64px" in p.describe() and p.key() in p.describe()
    with pytest.raises(ValueError):
        _protocol(resolution=-1)


def test_cached_real_statistics_round_trip(tmp_path: Path) -> None:
    calls = []

    def compute():
        calls.append(1)
        return {"real_features": torch.arange(12.0).view(4, 3), "n": torch.tensor(4)}

    p = _protocol()
    first = cached_real_statistics(p, tmp_path, compute, name="inception")
    path = statistics_path(p, tmp_path, "inception")
    assert path.name == f"inception-{p.key()}.pt" and path.is_file()
    second = cached_real_statistics(p, tmp_path, compute, name="inception")
    assert len(calls) == 1
    assert second.keys() == first.keys()
    for k in first:
        assert torch.equal(first[k], second[k])
    blob = torch.load(path, weights_only=True)
    assert json.loads(blob["protocol"]) == p.to_dict()
    # A changed option never reuses stale statistics.
    cached_real_statistics(p.replace(num_real=9999), tmp_path, compute, name="inception")
    assert len(calls) == 2
    # A corrupt file is recomputed and replaced, not a crash; no temporary files remain.
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        again = cached_real_statistics(p, tmp_path, compute, name="inception")
    assert len(calls) == 3 and torch.equal(again["real_features"], first["real_features"])
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


# --- DDP: two gloo processes give the single-process numbers ------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, stub: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))  # fail, never hang, if a rank dies
    try:
        real, fake = _faces(32, 16, seed=0), _faces(32, 16, seed=7)
        swd = SlicedWassersteinDistance()
        inc = _stub_metrics(Path(stub), kid_subset_size=20, kid_subsets=5, is_splits=2)
        # DistributedSampler-style interleaved shards, in uneven batches.
        my_real, my_fake = real[rank::world], fake[rank::world]
        for chunk in my_real.split(5):
            swd.update(chunk, real=True)
            inc.update(chunk, real=True)
        for chunk in my_fake.split(7 if rank == 0 else 5):  # ranks with different batch counts
            swd.update(chunk, real=False)
            inc.update(chunk, real=False)
        values = {k: float(v) for k, v in {**swd.compute(), **inc.compute()}.items()}
        # Cached statistics: computed collectively, loaded back into fresh metrics.
        p = _protocol(feature_extractor=inc.feature_extractor_id, num_real=32, num_fake=32)
        stats = cached_real_statistics(p, out_dir, inc.real_statistics, name="inception")
        fresh = _stub_metrics(Path(stub), kid_subset_size=20, kid_subsets=5, is_splits=2)
        fresh.load_real_statistics(stats)
        for chunk in my_fake.split(7):
            fresh.update(chunk, real=False)
        values.update({f"cached_{k}": float(v) for k, v in fresh.compute().items()})
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(values, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path: Path, stub_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(stub_path), str(tmp_path)), nprocs=2, join=True)
    real, fake = _faces(32, 16, seed=0), _faces(32, 16, seed=7)
    expected = dict(sliced_wasserstein_distance(real, fake))
    expected.update(_values(_stub_metrics(stub_path, kid_subset_size=20, kid_subsets=5, is_splits=2), real, fake))
    expected.update({f"cached_{k}": v for k, v in expected.items() if not k.startswith("swd")})
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got.keys() == expected.keys()
        for k in expected:
            assert got[k] == pytest.approx(expected[k], rel=1e-4, abs=1e-6), k
    assert len(list(tmp_path.glob("inception-*.pt"))) == 1
