"""Real-data loaders (CelebA, Face2Text/LFW, folder) on tiny fixtures in the published layouts."""

from __future__ import annotations

import json
import os
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from t2f.data.base import collate_faces
from t2f.data.celeba import (
    ATTRIBUTE_NAMES,
    CelebADataModule,
    caption_attributes,
    caption_vocabulary,
    make_caption,
)
from t2f.data.face2text import Face2TextDataModule
from t2f.data.folder import FolderDataModule
from t2f.data.images import ImageCache
from t2f.data.transforms import Crop, crop_resize, find_images, load_image
from t2f.data.vocab import BOS, EOS, UNK, Vocabulary, tokenize
from tests.conftest import TINY_MODEL, compose_config
from tests.fixtures_datasets import make_celeba, make_face2text, make_folder

FAST = {"resolution": 32, "batch_size": 8, "num_workers": 0, "decode_workers": 1, "progress": False}


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba")
    return root, make_celeba(root)


@pytest.fixture(scope="module")
def face2text_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("face2text")
    return root, make_face2text(root)


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    return root, make_folder(root)


def celeba(root, tmp_path, **kw) -> CelebADataModule:
    dm = CelebADataModule(root, cache_dir=tmp_path / "cache", **{**FAST, **kw})
    dm.setup("fit")
    return dm


def face2text(root, tmp_path, **kw) -> Face2TextDataModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm = Face2TextDataModule(root, cache_dir=tmp_path / "cache", **{**FAST, **kw})
        dm.setup("fit")
    return dm


def folder(root, tmp_path, **kw) -> FolderDataModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm = FolderDataModule(root, cache_dir=tmp_path / "cache", **{**FAST, **kw})
        dm.setup("fit")
    return dm


def mirrored(t: torch.Tensor) -> torch.Tensor:
    return t.flip(2)


# --- geometry ----------------------------------------------------------------------------

def test_crop_boxes_match_the_literature():
    assert Crop(178).box(178, 218) == (0, 20, 178, 198)  # default CelebA crop
    assert Crop(108).box(178, 218) == (35, 55, 143, 163)  # DCGAN-tensorflow
    assert Crop(128, (89, 121)).box(178, 218) == (25, 57, 153, 185)  # Progressive GAN
    assert Crop(150).box(250, 250) == (50, 50, 200, 200)  # LFW face
    assert Crop(None).box(300, 200) == (50, 0, 250, 200)  # largest centred square
    assert Crop(500).box(178, 218) == (0, 20, 178, 198)  # too large: shrunk to fit
    assert Crop(100, (10, 10)).box(178, 218) == (0, 0, 100, 100)  # shifted inside the image
    with pytest.raises(ValueError, match="crop size"):
        Crop(0)


def test_crop_resize_keeps_only_the_crop():
    img = np.zeros((218, 178, 3), np.uint8)
    img[:, :] = (0, 255, 0)
    img[:20] = img[198:] = (255, 0, 0)  # outside the default crop
    out = crop_resize(Image.fromarray(img), 32, Crop(178))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out[2:-2, :, 0].max() < 5 and out[2:-2, :, 1].min() > 250
    grey = crop_resize(Image.fromarray(img[..., 0]), 16, Crop(None))  # grayscale -> RGB
    assert grey.shape == (16, 16, 3)


def test_find_images_recursive_mixed_extensions(folder_root):
    root, info = folder_root
    assert find_images(root) == sorted(info["good"] + info["bad"])  # no .txt, no hidden folder


# --- CelebA ------------------------------------------------------------------------------

def test_celeba_parses_irregular_spacing_and_splits(celeba_root, tmp_path):
    root, info = celeba_root
    dm = celeba(root, tmp_path)
    assert dm.attribute_names == list(ATTRIBUTE_NAMES)
    np.testing.assert_array_equal(dm.attributes, info["attributes"])
    assert len(dm.train_set) == 24 and len(dm.val_set) == 8
    assert set(dm.files[r] for r in dm.val_set.rows) == {n for n, p in zip(info["names"], info["partition"]) if p == 1}
    assert len(celeba(root, tmp_path, train_split="all").train_set) == 36
    trainval = celeba(root, tmp_path, train_split="trainval")
    assert len(trainval.train_set) == 32
    # images training never sees: val and test (12) when training on train, test (4) on trainval
    held = dm.held_out_set()
    assert sorted(dm.files[r] for r in held.rows) == [n for n, p in zip(info["names"], info["partition"]) if p]
    assert len(trainval.held_out_set()) == 4 and not held.flip  # never flipped
    with pytest.raises(ValueError, match="train_split=nope must be one of"):
        CelebADataModule(root, train_split="nope")


def test_celeba_items_and_captions_agree_with_attributes(celeba_root, tmp_path):
    root, info = celeba_root
    dm = celeba(root, tmp_path, flip=False)
    assert dm.vocab == caption_vocabulary() and dm.has_captions
    for i in range(len(dm.train_set)):
        item = dm.train_set[i]
        row = int(dm.train_set.rows[i])
        assert set(item) == {"image", "caption", "caption_index", "attributes"}
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
        assert -1 <= item["image"].min() and item["image"].max() <= 1
        assert torch.equal(item["attributes"], torch.from_numpy(info["attributes"][row]))
        cap = item["caption"]
        assert cap.dtype == torch.long and cap[0] == BOS and cap[-1] == EOS and UNK not in cap.tolist()
        present = {n for n, v in zip(ATTRIBUTE_NAMES, info["attributes"][row]) if v}
        captions = [dm.train_set.captions.get(i, j) for j in range(5)]
        assert dm.vocab.decode(cap) == " ".join(tokenize(captions[item["caption_index"]]))
        for text in captions:
            male, mentioned = caption_attributes(text)
            assert male == ("Male" in present), text
            assert mentioned <= present | ({"No_Beard"} if "No_Beard" not in present else set()), text
    batch = collate_faces([dm.train_set[i] for i in range(8)])
    assert batch["image"].shape == (8, 3, 32, 32) and batch["attributes"].shape == (8, 40)
    assert batch["caption_length"].shape == (8,)


def test_celeba_caption_generator_is_varied_true_and_in_vocabulary():
    vocab = caption_vocabulary()
    rng = np.random.default_rng(0)
    mentioned_ever: set[str] = set()
    texts = set()
    for k in range(2000):
        present = {n for n in ATTRIBUTE_NAMES if rng.random() < 0.3}
        text = make_caption(present, random.Random(k))
        texts.add(text)
        male, mentioned = caption_attributes(text)
        assert male == ("Male" in present)
        beard = {"No_Beard"} if "No_Beard" not in present else set()
        assert mentioned <= present | beard, text
        assert UNK not in vocab.encode(text)
        mentioned_ever |= mentioned
    assert len(texts) > 1900
    assert mentioned_ever >= set(ATTRIBUTE_NAMES) - {"Male"}  # every attribute can be expressed
    text = make_caption({"Smiling", "Wavy_Hair", "Blond_Hair", "Arched_Eyebrows", "No_Beard"}, random.Random(0))
    assert caption_attributes(text)[0] is False


def test_celeba_sample_captions_are_fixed_by_seed(celeba_root, tmp_path):
    dm = celeba(celeba_root[0], tmp_path)
    a, b = dm.sample_captions(6, seed=1), dm.sample_captions(6, seed=1)
    assert a == b and len(a) == 6 and all(isinstance(t, str) and t for t in a)


def test_flip_is_random_for_training_and_off_for_validation(celeba_root, tmp_path):
    dm = celeba(celeba_root[0], tmp_path)
    plain = celeba(celeba_root[0], tmp_path, flip=False)
    original = plain.train_set[0]["image"]
    torch.manual_seed(0)
    flips = []
    for _ in range(24):
        image = dm.train_set[0]["image"]
        assert torch.equal(image, original) or torch.equal(image, mirrored(original))
        flips.append(torch.equal(image, mirrored(original)))
    assert 0 < sum(flips) < 24
    val = plain.val_set[0]["image"]
    assert all(torch.equal(dm.val_set[0]["image"], val) for _ in range(8))


# --- the cache ---------------------------------------------------------------------------

def test_cache_equals_direct_decoding(celeba_root, tmp_path):
    root, info = celeba_root
    dm = celeba(root, tmp_path, crop_size=128, crop_center=[89, 121])
    direct = celeba(root, tmp_path, crop_size=128, crop_center=[89, 121], cache=False, flip=False)
    assert direct.image_cache is None and dm.image_cache.path.is_file()
    images = np.load(dm.image_cache.path, mmap_mode="r")
    assert images.shape == (36, 32, 32, 3) and images.dtype == np.uint8
    for row, name in enumerate(info["names"]):
        expected = load_image(root / "img_align_celeba" / name, 32, Crop(128, (89, 121)))
        np.testing.assert_array_equal(images[row], expected)
    torch.manual_seed(0)
    plain = celeba(root, tmp_path, crop_size=128, crop_center=[89, 121], flip=False)
    for i in range(len(plain.train_set)):
        assert torch.equal(plain.train_set[i]["image"], direct.train_set[i]["image"])
    assert not [p.name for p in dm.cache_dir.iterdir() if ".tmp" in p.name]  # written atomically


def test_parallel_prepare_equals_serial(folder_root, tmp_path):
    root, info = folder_root
    files = info["good"] * 4  # 80 rows: above the threshold for the pool
    serial = ImageCache(tmp_path / "a", "folder", root, files, 16, Crop(None))
    pooled = ImageCache(tmp_path / "b", "folder", root, files, 16, Crop(None))
    serial.prepare(workers=1, progress=False)
    pooled.prepare(workers=2, progress=False)
    np.testing.assert_array_equal(np.load(serial.path), np.load(pooled.path))


def test_changed_options_never_reuse_a_stale_cache(tmp_path):
    root = tmp_path / "imgs"
    make_folder(root, corrupt=False)
    dm = folder(root, tmp_path)
    first = dm.image_cache.path
    assert folder(root, tmp_path).image_cache.path == first  # same options: same cache
    keys = {first}
    for kw in ({"crop_size": 40}, {"crop_center": [20, 30]}, {"resolution": 16}):
        other = folder(root, tmp_path, **kw).image_cache.path
        assert other not in keys and other.is_file()
        keys.add(other)
    face_image_path = root / "d" / "new.jpg"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(face_image_path)
    grown = folder(root, tmp_path)
    assert grown.image_cache.path not in keys and len(grown.train_set) == 21
    # a damaged cache file is prepared again, not trusted
    with open(grown.image_cache.path, "r+b") as f:
        f.truncate(100)
    again = folder(root, tmp_path)
    assert again.image_cache.path == grown.image_cache.path
    assert np.load(again.image_cache.path).shape == (21, 32, 32, 3)


# --- Face2Text -----------------------------------------------------------------------------

def test_face2text_maps_bmp_to_jpg_reports_missing_and_empty(face2text_root, tmp_path):
    root, info = face2text_root
    with pytest.warns(UserWarning) as record:
        dm = Face2TextDataModule(root, cache_dir=tmp_path / "cache", **FAST)
        dm.setup()
    messages = " ".join(str(w.message) for w in record)
    assert "1 of the 15 images" in messages and "Nobody_Here/Nobody_Here_0001.bmp" in messages
    assert "skipped 2 empty or whitespace-only" in messages
    assert dm.missing_images == ["Nobody_Here/Nobody_Here_0001.bmp"] and dm.empty_captions == 2
    assert sorted(dm.files) == sorted(info["described"])
    # one sample per description; the split is by image
    assert len(dm.train_set) + len(dm.val_set) == 2 * 14
    train_images = {int(r) for r in dm.train_set.rows}
    val_images = {int(r) for r in dm.val_set.rows}
    assert len(val_images) == 1 and not train_images & val_images
    for ds in (dm.train_set, dm.val_set):
        for i in range(len(ds)):
            name = dm.files[int(ds.rows[i])]
            assert ds.captions.count(i) == 1 and ds.captions.get(i, 0) in info["described"][name]
            item = ds[i]
            assert item["image"].shape == (3, 32, 32) and "attributes" not in item
            assert item["caption"][0] == BOS and item["caption"][-1] == EOS
    # the vocabulary comes from training descriptions only
    train_words = {w for i in range(len(dm.train_set)) for w in tokenize(dm.train_set.captions.get(i, 0))}
    assert set(dm.vocab.tokens) == train_words
    val_only = {w for i in range(len(dm.val_set)) for w in tokenize(dm.val_set.captions.get(i, 0))} - train_words
    assert val_only  # the fixture's numbers are unique per image
    with pytest.warns(UserWarning, match="not in the vocabulary"):
        ids = dm.vocab.encode(" ".join(val_only), warn_unknown=True)
    assert ids[1:-1] == [UNK] * len(val_only)


def test_face2text_options(face2text_root, tmp_path):
    root, _ = face2text_root
    raw = face2text(root, tmp_path, annotations="raw.json", val_fraction=0.0)
    assert len(raw.train_set) == 14 and len(raw.val_set) == 0
    rare = face2text(root, tmp_path, min_freq=3)
    assert len(rare.vocab) < len(face2text(root, tmp_path).vocab)
    assert not {w for w in rare.vocab.tokens if w.isdigit()}
    other_split = face2text(root, tmp_path, split_seed=5, val_fraction=0.3)
    assert len({int(r) for r in other_split.val_set.rows}) == 4
    assert len(other_split.sample_captions(3, seed=0)) == 3


def test_vocabulary_round_trips_through_the_datamodule_state(face2text_root, tmp_path):
    dm = face2text(face2text_root[0], tmp_path)
    state = dm.state_dict()
    assert Vocabulary.from_state_dict(state["vocab"]) == dm.vocab
    fresh = Face2TextDataModule(face2text_root[0], cache_dir=tmp_path / "cache", **FAST)
    fresh.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh.setup()  # same data and options: accepted
    changed = Face2TextDataModule(face2text_root[0], cache_dir=tmp_path / "cache", **{**FAST, "min_freq": 2})
    changed.load_state_dict(state)
    with pytest.raises(RuntimeError, match="vocabulary differs"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        changed.setup()


# --- folder --------------------------------------------------------------------------------

def test_folder_skips_corrupt_images_and_reports_them(folder_root, tmp_path):
    root, info = folder_root
    with pytest.warns(UserWarning, match="skipped 2 unreadable image file"):
        dm = FolderDataModule(root, cache_dir=tmp_path / "cache", **FAST)
        dm.setup()
    assert sorted(s["file"] for s in dm.skipped) == info["bad"]
    assert len(dm.train_set) == len(info["good"]) and dm.vocab is None and len(dm.val_set) == 0
    assert {dm.files[int(r)] for r in dm.train_set.rows} == set(info["good"])
    loader = dm.train_dataloader()
    assert sum(len(b["image"]) for b in loader) == 16  # drop_last with batches of 8
    meta = json.loads(dm.image_cache.meta_path.read_text())
    assert len(meta["skipped"]) == 2
    # a second setup reads the cache and still knows about the skipped files
    again = folder(root, tmp_path)
    assert len(again.skipped) == 2 and len(again.train_set) == 20


def test_folder_direct_decoding_steps_over_corrupt_files(folder_root, tmp_path):
    root, info = folder_root
    dm = folder(root, tmp_path, cache=False, flip=False)
    assert len(dm.train_set) == 22
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        images = [dm.train_set[i]["image"] for i in range(len(dm.train_set))]
    assert all(im.shape == (3, 32, 32) for im in images)


def test_folder_captions_json_and_jsonl(tmp_path):
    root = tmp_path / "imgs"
    info = make_folder(root, corrupt=False)
    good = info["good"]
    mapping = {name: [f"a face number {i}", "  "] for i, name in enumerate(good[:12])}
    mapping[good[0]] = "a single caption"
    (root / "captions.json").write_text(json.dumps(mapping))
    with pytest.warns(UserWarning, match="skipped 11 empty"):
        dm = FolderDataModule(root, captions="captions.json", val_fraction=0.25, cache_dir=tmp_path / "c", **FAST)
        dm.setup()
    assert dm.uncaptioned == 8 and len(dm.train_set) + len(dm.val_set) == 12 and len(dm.val_set) == 3
    item = dm.train_set[0]
    assert item["caption"][0] == BOS and dm.has_captions
    assert len(dm.sample_captions(4)) == 4

    lines = [json.dumps({"image": good[i], "caption": f"person {i} smiles"}) for i in range(10)]
    lines.append(json.dumps({"image": good[0], "caption": ["another caption"]}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    dm = folder(root, tmp_path, captions=str(root / "captions.jsonl"))
    assert len(dm.train_set) == 10
    first = dm.files.index(good[0])
    assert dm.train_set.captions.captions[list(dm.train_set.rows).index(first)] == [
        "person 0 smiles", "another caption"]

    (root / "bad.json").write_text(json.dumps({"nope/missing.png": ["a face"], good[0]: ["x"]}))
    with pytest.raises(ValueError, match="'nope/missing.png'"):
        folder(root, tmp_path, captions="bad.json")
    with pytest.raises(ValueError, match="use a .json or .jsonl"):
        folder(root, tmp_path, captions="notes.txt")


# --- errors --------------------------------------------------------------------------------

def test_missing_root_names_layout_and_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)img_align_celeba.*list_eval_partition.*mmlab.ie.cuhk.edu.hk"):
        celeba(tmp_path / "nowhere", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"(?s)clean.json.*vis-www.cs.umass.edu/lfw"):
        face2text(tmp_path / "nowhere", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        folder(tmp_path / "empty", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"(?s)clean.json does not exist.*Face2Text"):
        face2text(tmp_path / "empty", tmp_path)


@pytest.fixture
def celeba_copy(tmp_path):
    root = tmp_path / "celeba"
    make_celeba(root, partition=[0] * 6 + [1] * 2)
    return root


def test_celeba_missing_files_are_named(celeba_copy, tmp_path):
    (celeba_copy / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)1 of the 8 images .* the first is 000003.jpg.*CelebA.html"):
        celeba(celeba_copy, tmp_path)
    (celeba_copy / "list_eval_partition.txt").unlink()
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt was not found"):
        celeba(celeba_copy, tmp_path)


def test_celeba_mismatched_rows_name_the_first_mismatch(celeba_copy, tmp_path):
    part = celeba_copy / "list_eval_partition.txt"
    lines = part.read_text().splitlines()
    part.write_text("\n".join([*lines[:4], "000099.jpg 0", *lines[5:]]) + "\n")
    with pytest.raises(ValueError, match=r"disagree at image row 5: 000005.jpg vs 000099.jpg"):
        celeba(celeba_copy, tmp_path)
    part.write_text("\n".join(lines[:6]) + "\n")
    with pytest.raises(ValueError, match=r"list_attr_celeba.txt lists 000007.jpg \(row 7\)"):
        celeba(celeba_copy, tmp_path)


@pytest.mark.parametrize("damage, message", [
    (lambda lines: ["9", *lines[1:]], "line 1 says 9 images but the file has 8 rows"),
    (lambda lines: [*lines[:4], lines[4].replace(" 1", " 0", 1).replace("-1", " 0", 1), *lines[5:]],
     "line 5: attribute values must be 1 or -1"),
    (lambda lines: [*lines[:3], lines[3] + " 1", *lines[4:]], "line 4 has 41 values for 40 attributes"),
])
def test_celeba_malformed_attribute_file(celeba_copy, tmp_path, damage, message):
    attr = celeba_copy / "list_attr_celeba.txt"
    attr.write_text("\n".join(damage(attr.read_text().splitlines())) + "\n")
    with pytest.raises(ValueError, match=message):
        celeba(celeba_copy, tmp_path)


# --- configs, the prepare command, training --------------------------------------------------

@pytest.mark.parametrize("name", ["celeba", "face2text", "folder"])
def test_config_requires_root_and_instantiates(tmp_path, name, celeba_root, face2text_root, folder_root):
    root = {"celeba": celeba_root, "face2text": face2text_root, "folder": folder_root}[name][0]
    cfg = compose_config(tmp_path, [f"dataset={name}"], tiny=False)
    assert OmegaConf.is_missing(cfg.dataset, "root")
    with pytest.raises(Exception, match="Missing mandatory value: dataset.root"):
        instantiate(cfg.dataset)
    cfg = compose_config(tmp_path, [f"dataset={name}", f"dataset.root={root}", "dataset.resolution=32"], tiny=False)
    dm = instantiate(cfg.dataset)
    assert dm.root == Path(root) and dm.cache_dir == tmp_path.parent / "t2f-cache" / "prepared"
    assert dm.flip and dm.use_cache and dm.resolution == 32


def test_prepare_command_builds_the_cache_once(celeba_root, tmp_path, capsys):
    from t2f.data.prepare import main

    args = ["dataset=celeba", f"dataset.root={celeba_root[0]}", "dataset.resolution=16",
            f"paths.cache_dir={tmp_path}", "dataset.progress=false"]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "preparing 36 celeba images at 16x16" in out.err and "train: 24" in out.out
    [cache] = (tmp_path / "prepared").glob("celeba-16px-*.npy")
    stamp = cache.stat().st_mtime_ns
    assert main(args) == 0
    assert "preparing" not in capsys.readouterr().err and cache.stat().st_mtime_ns == stamp


def _train(tmp_path, name, root, extra=()):
    from t2f.train import train

    cfg = compose_config(tmp_path, [
        f"dataset={name}", f"dataset.root={root}", "dataset.resolution=32", "dataset.batch_size=8",
        "dataset.num_workers=0", "dataset.decode_workers=1", "dataset.progress=false",
        "logger=csv", "print_config=false", "callbacks.progress_bar.refresh_rate=0",
        *TINY_MODEL["dcgan"], "model.total_kimg=0.016", *extra], tiny=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return torch.load(ckpt, weights_only=False)


def test_dcgan_trains_on_celeba(tmp_path, celeba_root):
    ckpt = _train(tmp_path, "celeba", celeba_root[0])
    assert ckpt["t2f"]["images_seen"] == 16
    assert ckpt["CelebADataModule"]["vocab"]["tokens"] == caption_vocabulary().tokens


def test_dcgan_trains_on_face2text_and_saves_its_vocabulary(tmp_path, face2text_root):
    ckpt = _train(tmp_path, "face2text", face2text_root[0])
    tokens = ckpt["Face2TextDataModule"]["vocab"]["tokens"]
    assert "smiling" in tokens and "hair" in tokens


def test_dcgan_trains_on_a_folder_with_corrupt_files(tmp_path, folder_root):
    ckpt = _train(tmp_path, "folder", folder_root[0])
    assert ckpt["t2f"]["images_seen"] == 16
    assert os.path.isdir(tmp_path / "run" / "samples")


def test_pin_memory_auto_pins_only_for_a_gpu_trainer(tmp_path):
    """dataset.pin_memory=auto: page-locked batches (for Lightning's non-blocking copies) exactly
    when the trainer's device is a GPU; an explicit true/false is kept; anything else is refused."""
    from types import SimpleNamespace

    from t2f.data.synthetic import SyntheticDataModule

    dm = SyntheticDataModule(root=str(tmp_path), size=8, val_size=4, resolution=8, batch_size=4)
    assert dm.pin_memory == "auto" and dm._pin() is False  # no trainer yet
    for device, pinned in (("cpu", False), ("cuda", True)):
        dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        assert dm._pin() is pinned
    dm.pin_memory = False
    assert dm._pin() is False
    with pytest.raises(ValueError, match="dataset.pin_memory"):
        SyntheticDataModule(root=str(tmp_path), size=8, val_size=4, resolution=8, batch_size=4, pin_memory="yes")
