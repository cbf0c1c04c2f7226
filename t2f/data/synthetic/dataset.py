"""The rendered set (cached per size, resolution, seed and RENDER_VERSION) and its datamodule."""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from t2f.data.attributes import AttributeTask
from t2f.data.base import FaceDataModule
from t2f.data.synthetic.attributes import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    attributes_to_vector,
    sample_attributes,
)
from t2f.data.synthetic.captions import make_captions, parse_caption
from t2f.data.synthetic.renderer import check_render_resolution, render_face
from t2f.data.vocab import Vocabulary
from t2f.utils import check_writable_dir

# Bump whenever drawing, attribute sampling or caption generation changes: it is part of
# the cache key, so stale caches are never reused.
RENDER_VERSION = 1

# ------------------------------------------------------------------------------ dataset

def render_sample(seed: int, index: int, resolution: int, captions_per_image: int):
    """Attributes, image and captions of sample ``index``; depends only on (seed, index)."""
    rng = np.random.default_rng([seed, index])
    attrs = sample_attributes(rng)
    image = render_face(attrs, rng, resolution)
    captions = make_captions(attrs, rng, captions_per_image)
    return attrs, image, captions


def _render_range(args: tuple[int, int, int, int, int]):
    seed, start, stop, resolution, k = args
    images = np.empty((stop - start, resolution, resolution, 3), np.uint8)
    attributes = np.empty((stop - start, len(ATTRIBUTE_NAMES)), np.int64)
    captions: list[list[str]] = []
    for j, i in enumerate(range(start, stop)):
        attrs, images[j], caps = render_sample(seed, i, resolution, k)
        attributes[j] = attributes_to_vector(attrs)
        captions.append(caps)
    return start, images, attributes, captions


def default_cache_dir() -> Path:
    """``$T2F_CACHE_DIR/synthetic`` if the variable is set, else ``~/.cache/t2f/synthetic``."""
    root = os.environ.get("T2F_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "t2f") / "synthetic"


def cache_file_name(size: int, resolution: int, seed: int, captions_per_image: int) -> str:
    return f"faces_n{size}_r{resolution}_s{seed}_c{captions_per_image}_v{RENDER_VERSION}.npz"


PARALLEL_THRESHOLD = 2048  # sets at least this large render in a process pool


def render_dataset(
    size: int, resolution: int, seed: int, captions_per_image: int, processes: int | None = None, verbose: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a whole set: uint8 images (N, H, W, 3), int64 attributes (N, A), captions (N, K) str array."""
    check_render_resolution(resolution)
    if processes is None:
        processes = os.cpu_count() or 1
    processes = max(1, min(processes, os.cpu_count() or 1))
    images = np.empty((size, resolution, resolution, 3), np.uint8)
    attributes = np.empty((size, len(ATTRIBUTE_NAMES)), np.int64)
    captions: list[list[str]] = [[] for _ in range(size)]
    chunk = 256
    jobs = [(seed, s, min(s + chunk, size), resolution, captions_per_image) for s in range(0, size, chunk)]
    show = verbose and size >= PARALLEL_THRESHOLD
    t0 = time.perf_counter()
    if show:
        print(f"[t2f] rendering {size} synthetic faces at {resolution}x{resolution} (seed {seed}, "
              f"{processes} process{'es' if processes > 1 else ''}) ...", file=sys.stderr, flush=True)

    def collect(results) -> None:
        done, next_report = 0, 0.1
        for start, im, at, caps in results:
            images[start : start + len(im)] = im
            attributes[start : start + len(im)] = at
            captions[start : start + len(im)] = caps
            done += len(im)
            if show and done / size >= next_report:
                rate = done / max(time.perf_counter() - t0, 1e-9)
                print(f"[t2f]   {done}/{size} ({rate:.0f} images/s)", file=sys.stderr, flush=True)
                next_report += 0.1

    if processes > 1 and size >= PARALLEL_THRESHOLD:
        with multiprocessing.get_context().Pool(processes) as pool:
            collect(pool.imap_unordered(_render_range, jobs))
    else:
        collect(map(_render_range, jobs))
    if show:
        print(f"[t2f] rendered {size} faces in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    return images, attributes, np.array(captions, dtype=str).reshape(size, captions_per_image)


def _save_atomic(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SyntheticFaces(Dataset):
    """Procedurally drawn faces with attributes and captions, rendered once and cached.

    Items are dicts: ``image`` float32 (3, H, W) in [-1, 1]; ``caption`` int64 token ids
    (``[BOS] ... [EOS]``) of one of the image's captions, drawn with torch's RNG;
    ``caption_index`` which one; ``attributes`` int64 (A,) in :data:`ATTRIBUTES` order.
    """

    def __init__(
        self,
        size: int = 20000,
        resolution: int = 32,
        seed: int = 0,
        captions_per_image: int = 5,
        cache_dir: str | os.PathLike | None = None,
        vocab: Vocabulary | None = None,
    ):
        super().__init__()
        check_render_resolution(resolution)
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image must be positive, got {captions_per_image}")
        self.size, self.resolution, self.seed = int(size), int(resolution), int(seed)
        self.captions_per_image = int(captions_per_image)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.cache_path = self.cache_dir / cache_file_name(size, resolution, seed, captions_per_image)

        arrays = self._load_cache()
        if arrays is None:
            check_writable_dir(self.cache_dir, "set T2F_CACHE_DIR to a writable folder (or dataset.root=DIR)")
            images, attributes, captions = render_dataset(size, resolution, seed, captions_per_image)
            _save_atomic(self.cache_path, images=images, attributes=attributes, captions=captions)
        else:
            images, attributes, captions = arrays
        self.images: np.ndarray = images
        self.attributes: np.ndarray = attributes
        self.captions: list[list[str]] = captions.tolist()
        self.attribute_names: tuple[str, ...] = ATTRIBUTE_NAMES
        self.vocab: Vocabulary = vocab if vocab is not None else Vocabulary.build(c for cs in self.captions for c in cs)

    def _load_cache(self):
        if not self.cache_path.is_file():
            return None
        try:
            with np.load(self.cache_path, allow_pickle=False) as z:
                images, attributes, captions = z["images"], z["attributes"], z["captions"]
        except (OSError, ValueError, KeyError, EOFError) as e:  # corrupt or foreign file: render again
            print(f"[t2f] ignoring unreadable cache {self.cache_path}: {e}", file=sys.stderr)
            return None
        expected = (self.size, self.resolution, self.resolution, 3)
        if images.shape != expected or captions.shape != (self.size, self.captions_per_image):
            return None
        return images, attributes, captions

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        j = int(torch.randint(self.captions_per_image, ()).item())
        caption = torch.tensor(self.vocab.encode(self.captions[index][j]), dtype=torch.long)
        return {
            "image": image,
            "caption": caption,
            "caption_index": j,
            "attributes": torch.from_numpy(self.attributes[index].copy()),
        }


def synthetic_attribute_task() -> AttributeTask:
    """The 9 drawn attributes, read from captions by :func:`parse_caption`."""
    return AttributeTask("synthetic", tuple(ATTRIBUTES), tuple(len(v) for v in ATTRIBUTES.values()), parse_caption)


class SyntheticDataModule(FaceDataModule):
    """``dataset=synthetic``: the built-in faces; the last ``val_size`` faces are held out."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        size: int = 20000,
        val_size: int = 1000,
        captions_per_image: int = 5,
        seed: int = 0,
        **loader: Any,
    ) -> None:
        super().__init__(max_resolution=128, **loader)
        if size < 1:
            raise ValueError(f"dataset.size={size} must be >= 1: the number of training faces")
        if val_size < 0:
            raise ValueError(f"dataset.val_size={val_size} must be >= 0: the number of held-out faces")
        self.root = root
        self.size, self.val_size = int(size), int(val_size)
        self.captions_per_image = int(captions_per_image)
        self.seed = int(seed)
        self.faces: SyntheticFaces | None = None

    def build(self) -> None:
        self.faces = SyntheticFaces(
            size=self.size + self.val_size, resolution=self.resolution, seed=self.seed,
            captions_per_image=self.captions_per_image, cache_dir=self.root,
        )
        self.vocab = self.faces.vocab
        self.train_set = Subset(self.faces, range(self.size))
        self.val_set = Subset(self.faces, range(self.size, self.size + self.val_size))

    def attribute_task(self) -> AttributeTask:
        return synthetic_attribute_task()

    def sample_captions(self, n: int, seed: int = 0) -> list[str]:
        self.setup()
        rng = np.random.default_rng(seed)
        pool = range(self.size, self.size + self.val_size) if self.val_size else range(self.size)
        picks = rng.choice(len(pool), size=n, replace=n > len(pool))
        return [self.faces.captions[pool[i]][0] for i in picks]
