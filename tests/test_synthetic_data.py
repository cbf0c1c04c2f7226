import numpy as np
import pytest
import torch

from t2f.data.synthetic import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    RENDER_VERSION,
    SyntheticFaces,
    attributes_to_vector,
    cache_file_name,
    make_captions,
    parse_caption,
    render_face,
    sample_attributes,
    vector_to_attributes,
)
from t2f.data.synthetic import dataset as synthetic
from t2f.data.vocab import BOS, EOS, UNK, Vocabulary, tokenize

IDX = {name: {v: i for i, v in enumerate(values)} for name, values in ATTRIBUTES.items()}
A = {name: i for i, name in enumerate(ATTRIBUTE_NAMES)}


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return SyntheticFaces(size=64, resolution=32, seed=0, cache_dir=tmp_path_factory.mktemp("cache"))


def test_schema():
    assert ATTRIBUTE_NAMES[0] == "gender" and ATTRIBUTES["gender"] == ("man", "woman")
    assert len(ATTRIBUTES["skin_tone"]) == 4
    assert {"black", "brown", "blond", "red", "grey"} <= set(ATTRIBUTES["hair_color"])
    assert ATTRIBUTES["hair_length"] == ("bald", "short", "long")
    for binary in ("glasses", "smile", "beard"):
        assert ATTRIBUTES[binary] == ("no", "yes")
    assert len(ATTRIBUTES["background"]) >= 5


def test_attribute_sampling_and_vector():
    counts = np.zeros(len(ATTRIBUTE_NAMES), dtype=int)
    for i in range(300):
        a = sample_attributes(np.random.default_rng([5, i]))
        assert list(a) == list(ATTRIBUTE_NAMES)
        for name, v in a.items():
            assert 0 <= v < len(ATTRIBUTES[name])
        if a["gender"] == IDX["gender"]["woman"]:
            assert a["beard"] == 0
        vec = attributes_to_vector(a)
        assert vec.dtype == np.int64 and vec.shape == (len(ATTRIBUTE_NAMES),)
        assert vector_to_attributes(vec) == a
        counts += vec > 0
    assert (counts > 0).all()  # every attribute takes a non-default value sometimes


def test_shapes_dtypes_ranges(ds):
    n, r = 64, 32
    assert len(ds) == n
    assert ds.images.shape == (n, r, r, 3) and ds.images.dtype == np.uint8
    assert ds.attributes.shape == (n, len(ATTRIBUTE_NAMES)) and ds.attributes.dtype == np.int64
    assert len(ds.captions) == n and all(len(c) == 5 for c in ds.captions)
    assert ds.attribute_names == ATTRIBUTE_NAMES
    item = ds[3]
    assert set(item) == {"image", "caption", "attributes", "caption_index"}
    img = item["image"]
    assert img.shape == (3, r, r) and img.dtype == torch.float32
    assert img.min() >= -1 and img.max() <= 1 and img.std() > 0.1
    assert torch.equal(img, torch.from_numpy(ds.images[3]).permute(2, 0, 1).float() / 127.5 - 1)
    cap = item["caption"]
    assert cap.dtype == torch.long and cap[0] == BOS and cap[-1] == EOS and UNK not in cap.tolist()
    assert ds.vocab.decode(cap) == " ".join(tokenize(ds.captions[3][item["caption_index"]]))
    assert torch.equal(item["attributes"], torch.from_numpy(ds.attributes[3]))


def test_caption_choice_follows_torch_seed(ds):
    torch.manual_seed(0)
    a = [ds[i]["caption_index"] for i in range(32)]
    torch.manual_seed(0)
    b = [ds[i]["caption_index"] for i in range(32)]
    assert a == b and len(set(a)) > 1


def test_determinism(tmp_path):
    a = SyntheticFaces(size=16, resolution=16, seed=3, cache_dir=tmp_path / "a")
    b = SyntheticFaces(size=16, resolution=16, seed=3, cache_dir=tmp_path / "b")
    c = SyntheticFaces(size=16, resolution=16, seed=4, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.attributes, b.attributes)
    assert a.captions == b.captions and a.vocab == b.vocab
    assert not np.array_equal(a.images, c.images)
    assert a.captions != c.captions
    # image i only depends on (seed, i): a bigger set starts with the same images
    d = SyntheticFaces(size=24, resolution=16, seed=3, cache_dir=tmp_path / "d")
    np.testing.assert_array_equal(d.images[:16], a.images)


def test_parallel_rendering_matches_serial(monkeypatch):
    monkeypatch.setattr(synthetic, "PARALLEL_THRESHOLD", 8)
    monkeypatch.setattr(synthetic.os, "cpu_count", lambda: 2)
    serial = synthetic.render_dataset(12, 8, 1, 2, processes=1, verbose=False)
    parallel = synthetic.render_dataset(12, 8, 1, 2, processes=2, verbose=False)
    for s, p in zip(serial, parallel):
        np.testing.assert_array_equal(s, p)


def test_captions_agree_with_attributes(ds):
    for vec, caps in zip(ds.attributes, ds.captions):
        attrs = vector_to_attributes(vec)
        for c in caps:
            parsed = parse_caption(c)
            assert "gender" in parsed and len(parsed) >= 3, c
            assert {k: attrs[k] for k in parsed} == parsed, (c, parsed, attrs)


def test_caption_rules_over_many_samples():
    rng = np.random.default_rng(123)
    seen = set()
    for _ in range(400):
        attrs = sample_attributes(rng)
        for c in make_captions(attrs, rng, 3):
            p = parse_caption(c)
            assert {k: attrs[k] for k in p} == p, (c, attrs)
            seen.update(p)
            words = set(c.lower().replace(".", " ").replace(",", " ").split())
            if attrs["hair_length"] == IDX["hair_length"]["bald"]:
                assert "hair_color" not in p
                assert not words & {"black", "blond", "blonde", "red", "grey", "gray", "white", "ginger"}, c
            if attrs["gender"] == IDX["gender"]["woman"]:
                assert "beard" not in c.lower()
    assert seen == set(ATTRIBUTE_NAMES)  # every attribute gets mentioned


def test_captions_are_varied(ds):
    caps = [c for cs in ds.captions for c in cs]
    assert len(set(caps)) > 0.9 * len(caps)
    starts = {c.split()[0] for c in caps}
    assert len(starts) >= 4


def test_parse_free_text():
    assert parse_caption("a smiling woman with red hair") == {"smile": 1, "gender": 1, "hair_color": 3}
    assert parse_caption("A bald man without glasses, not smiling.") == {
        "hair_length": 0, "gender": 0, "glasses": 0, "smile": 0,
    }
    assert parse_caption("Her hair is long and blond. The background is pink.") == {
        "gender": 1, "hair_length": 2, "hair_color": 2, "background": 3,
    }
    assert parse_caption("A clean-shaven man with brown eyes and brown skin") == {"gender": 0, "beard": 0, "eye_color": 0}


def test_no_beard_for_women_in_images(ds):
    women = ds.attributes[:, A["gender"]] == IDX["gender"]["woman"]
    assert women.any() and (ds.attributes[women, A["beard"]] == 0).all()


def test_images_vary():
    images = synthetic.render_dataset(64, 16, 1, 1, verbose=False)[0].astype(np.float32)
    assert images.std(axis=0).mean() > 20  # pixels vary across the set
    assert len({im.tobytes() for im in images.astype(np.uint8)}) == 64


def _render_many(fixed: dict[str, int], n: int, resolution: int = 32, seed: int = 0) -> np.ndarray:
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        attrs = {**sample_attributes(rng), **fixed}
        out.append(render_face(attrs, rng, resolution).astype(np.float32))
    return np.stack(out)


def test_hair_colour_is_visible():
    base = {"hair_length": IDX["hair_length"]["short"], "glasses": 0}
    black = _render_many({**base, "hair_color": IDX["hair_color"]["black"]}, 24)
    blond = _render_many({**base, "hair_color": IDX["hair_color"]["blond"]}, 24, seed=1)
    top = slice(3, 8), slice(12, 20)  # top of the head
    assert blond[:, top[0], top[1]].mean() - black[:, top[0], top[1]].mean() > 60


def test_other_attributes_are_visible():
    """Paired renders (same seed, so same pose/shape/lighting) that differ in one attribute
    must differ clearly in the region where that attribute is drawn."""

    def diff(name: str, a: str, b: str, region, **fixed) -> float:
        x = _render_many({**fixed, name: IDX[name][a]}, 24)
        y = _render_many({**fixed, name: IDX[name][b]}, 24)
        return float(np.abs(x - y)[:, region[0], region[1]].mean())

    lower_face = slice(18, 24), slice(12, 20)
    eyes = slice(12, 17), slice(9, 23)
    assert diff("smile", "no", "yes", lower_face, beard=0) > 7
    assert diff("beard", "no", "yes", lower_face, gender=0) > 30
    assert diff("glasses", "no", "yes", eyes) > 20
    assert diff("eye_color", "blue", "brown", eyes) > 6
    assert diff("hair_length", "short", "long", (slice(16, 28), slice(4, 10))) > 12
    assert diff("background", "blue", "yellow", (slice(0, 3), slice(0, 3))) > 80


def test_cache_round_trip_does_not_rerender(tmp_path, monkeypatch):
    first = SyntheticFaces(size=20, resolution=16, seed=7, captions_per_image=3, cache_dir=tmp_path)
    path = tmp_path / cache_file_name(20, 16, 7, 3)
    assert first.cache_path == path and path.is_file()
    assert f"v{RENDER_VERSION}" in path.name
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp files

    def boom(*args, **kwargs):
        raise AssertionError("re-rendered although cached")

    monkeypatch.setattr(synthetic, "render_face", boom)
    second = SyntheticFaces(size=20, resolution=16, seed=7, captions_per_image=3, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.attributes, second.attributes)
    assert first.captions == second.captions and first.vocab == second.vocab
    # a different key is not served from this cache
    with pytest.raises(AssertionError, match="re-rendered"):
        SyntheticFaces(size=20, resolution=32, seed=7, captions_per_image=3, cache_dir=tmp_path)


def test_cache_key_and_env_override(tmp_path, monkeypatch):
    names = {
        cache_file_name(64, 32, 0, 5),
        cache_file_name(64, 64, 0, 5),
        cache_file_name(64, 32, 1, 5),
        cache_file_name(65, 32, 0, 5),
        cache_file_name(64, 32, 0, 4),
    }
    assert len(names) == 5
    monkeypatch.setenv("T2F_CACHE_DIR", str(tmp_path / "root"))
    assert synthetic.default_cache_dir() == tmp_path / "root" / "synthetic"
    ds = SyntheticFaces(size=4, resolution=8, seed=0)
    assert ds.cache_path.parent == tmp_path / "root" / "synthetic" and ds.cache_path.is_file()


def test_corrupt_cache_is_rerendered(tmp_path):
    path = tmp_path / cache_file_name(4, 8, 0, 2)
    path.write_bytes(b"not an npz")
    ds = SyntheticFaces(size=4, resolution=8, seed=0, captions_per_image=2, cache_dir=tmp_path)
    assert ds.images.shape == (4, 8, 8, 3)
    again = SyntheticFaces(size=4, resolution=8, seed=0, captions_per_image=2, cache_dir=tmp_path)
    np.testing.assert_array_equal(ds.images, again.images)


@pytest.mark.parametrize("resolution", [0, 4, 12, 48, 256, 33])
def test_bad_resolution(resolution, tmp_path):
    with pytest.raises(ValueError, match="power of two between 8 and 128"):
        SyntheticFaces(size=4, resolution=resolution, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="power of two"):
        render_face(sample_attributes(np.random.default_rng(0)), np.random.default_rng(0), resolution)


@pytest.mark.parametrize("resolution", [8, 16, 64, 128])
def test_all_resolutions_render(resolution):
    rng = np.random.default_rng(0)
    img = render_face(sample_attributes(rng), rng, resolution)
    assert img.shape == (resolution, resolution, 3) and img.dtype == np.uint8 and img.std() > 10


def test_external_vocab_is_used(tmp_path):
    vocab = Vocabulary(["a", "man", "woman"])
    ds = SyntheticFaces(size=4, resolution=8, cache_dir=tmp_path, vocab=vocab)
    assert ds.vocab is vocab
    ids = ds[0]["caption"].tolist()
    assert ids[0] == BOS and ids[-1] == EOS and UNK in ids


def test_dataloader_batches(ds):
    loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=lambda b: b)
    batch = next(iter(loader))
    assert len(batch) == 8 and batch[0]["image"].shape == (3, 32, 32)
