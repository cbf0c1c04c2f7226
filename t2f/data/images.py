"""What the real-image datasets share: the prepared cache, the item Dataset, a base datamodule.

Prepared cache
    Decoding, cropping and resizing JPEGs every epoch wastes time, so each image is
    decoded once and stored as uint8 in one memory-mapped ``.npy`` file per
    (dataset, root, file list with each file's size and modification time, crop, resolution)
    under ``dataset.cache_dir``; the file name carries a hash of exactly these, so changing any
    option, or replacing an image under the same name, never reuses a stale cache.
    Files are written to a temporary name and moved into place with ``os.replace`` (a
    crashed prepare leaves no half-written cache behind, and the temporaries a killed one left
    are removed when the cache is next prepared); a ``.json`` sidecar records the
    parameters and the images that could not be decoded (they are skipped, counted and
    reported, never trained on). Training reads rows with ``np.load(mmap_mode='r')``, so
    the set does not have to fit in memory and DataLoader workers share the page cache.

Items
    ``image`` float32 (3, H, W) in [-1, 1] (mirrored with probability 1/2 when ``flip``);
    ``caption`` int64 ``[BOS] .. [EOS]``, one of the sample's captions drawn with torch's
    RNG, and ``caption_index``; ``attributes`` int64 where the dataset has them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from t2f.checkpoint_io import remove_stale_temporaries, temporary_path
from t2f.data.base import FaceDataModule
from t2f.data.transforms import DECODE_ERRORS, Crop, load_image, to_tensor
from t2f.data.vocab import Vocabulary
from t2f.utils import check_writable_dir

# Bump when decoding/cropping/resizing changes: part of the cache key (2: 16-bit grayscale scaled to 8 bits).
CACHE_VERSION = 2
PARALLEL_THRESHOLD = 64  # fewer images than this decode in-process
_CHUNK = 32


def report(message: str) -> None:
    print(f"[t2f] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- cache

def _decode_chunk(job: tuple[int, list[str], int, Crop]) -> tuple[int, np.ndarray, list[tuple[int, str]]]:
    start, paths, resolution, crop = job
    out = np.zeros((len(paths), resolution, resolution, 3), np.uint8)
    errors: list[tuple[int, str]] = []
    for j, path in enumerate(paths):
        try:
            out[j] = load_image(path, resolution, crop)
        except DECODE_ERRORS as e:
            errors.append((start + j, f"{type(e).__name__}: {e}"))
    return start, out, errors


@contextlib.contextmanager
def _file_lock(path: Path):
    """Exclusive lock (POSIX), so DDP ranks or parallel runs prepare a cache only once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, writes are still atomic
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class ImageCache:
    """The prepared uint8 array for one file list at one resolution and crop.

    Args:
        cache_dir: where caches live (``${paths.cache_dir}/prepared`` in the configs).
        dataset: a name for the file name and key (``celeba``, ``face2text``, ``folder``).
        root: the directory ``files`` are relative to.
        files: image paths relative to ``root``, in row order.
    """

    def __init__(self, cache_dir: str | os.PathLike, dataset: str, root: str | os.PathLike,
                 files: Sequence[str], resolution: int, crop: Crop) -> None:
        self.root = Path(root).expanduser().resolve()
        self.files = list(files)
        self.resolution, self.crop, self.dataset = int(resolution), crop, dataset
        self.params = {
            "version": CACHE_VERSION, "dataset": dataset, "root": str(self.root),
            "resolution": self.resolution, "crop": crop.as_dict(), "resize": "lanczos",
            "count": len(self.files),
        }
        h = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode())
        h.update("\n".join(f"{f}\t{_signature(self.root / f)}" for f in self.files).encode())
        self.key = h.hexdigest()[:16]
        base = Path(cache_dir).expanduser() / f"{dataset}-{self.resolution}px-{self.key}"
        self.path, self.meta_path = base.with_suffix(".npy"), base.with_suffix(".json")

    # -- reading -------------------------------------------------------------------------
    def load(self) -> tuple[np.ndarray, dict] | None:
        """The memory-mapped images and the metadata, or None if absent or unusable."""
        if not (self.path.is_file() and self.meta_path.is_file()):
            return None
        try:
            meta = json.loads(self.meta_path.read_text())
            images = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError, json.JSONDecodeError) as e:
            report(f"ignoring unreadable cache {self.path} ({e}); preparing it again")
            return None
        expected = (len(self.files), self.resolution, self.resolution, 3)
        if images.shape != expected or images.dtype != np.uint8 or meta.get("params") != self.params:
            report(f"ignoring cache {self.path}: it does not match ({images.shape} vs {expected})")
            return None
        return images, meta

    def get(self, workers: int | None = None, progress: bool = True) -> tuple[np.ndarray, dict]:
        """Load the cache, preparing it first if needed (under a lock)."""
        loaded = self.load()
        if loaded is not None:
            return loaded
        check_writable_dir(self.path.parent, "set T2F_CACHE_DIR (or dataset.cache_dir) to a writable folder")
        with _file_lock(self.path.with_suffix(".lock")):
            loaded = self.load()  # another process may have prepared it meanwhile
            if loaded is None:
                self.prepare(workers=workers, progress=progress)
                loaded = self.load()
        if loaded is None:  # pragma: no cover - prepare wrote something load refuses
            raise RuntimeError(f"the prepared cache {self.path} could not be read back")
        return loaded

    # -- writing -------------------------------------------------------------------------
    def prepare(self, workers: int | None = None, progress: bool = True) -> dict:
        """Decode every file once into the cache (atomically); returns the metadata."""
        n, r = len(self.files), self.resolution
        workers = max(1, min(workers or os.cpu_count() or 1, os.cpu_count() or 1))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path.parent, of=[self.path.name, self.meta_path.name])  # we hold the lock
        tmp = temporary_path(str(self.path))
        paths = [str(self.root / f) for f in self.files]
        jobs = [(s, paths[s:s + _CHUNK], r, self.crop) for s in range(0, n, _CHUNK)]
        errors: list[tuple[int, str]] = []
        t0 = time.perf_counter()
        report(f"preparing {n} {self.dataset} images at {r}x{r} (crop {self.crop.as_dict()}) "
               f"-> {self.path}")
        try:
            images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, r, r, 3))
            bar = _progress(n, f"[t2f] {self.dataset} {r}px", progress)
            parallel = workers > 1 and n >= PARALLEL_THRESHOLD
            with (multiprocessing.get_context().Pool(workers) if parallel else contextlib.nullcontext()) as pool:
                results = pool.imap_unordered(_decode_chunk, jobs) if parallel else map(_decode_chunk, jobs)
                for start, chunk, errs in results:
                    images[start:start + len(chunk)] = chunk
                    errors.extend(errs)
                    bar.update(len(chunk))
            bar.close()
            images.flush()
            del images
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        errors.sort()
        seconds = time.perf_counter() - t0
        meta = {
            "params": self.params,
            "skipped": [{"row": i, "file": self.files[i], "error": e} for i, e in errors],
            "seconds": round(seconds, 3),
        }
        _write_json_atomic(self.meta_path, meta)
        report(f"prepared {n - len(errors)} images in {seconds:.1f}s ({n / max(seconds, 1e-9):.0f} images/s, "
               f"{workers if parallel else 1} process{'es' if parallel and workers > 1 else ''})")
        if errors:
            warn_skipped(errors, self.files)
        return meta


def warn_skipped(errors: Sequence[tuple[int, str]], files: Sequence[str]) -> None:
    first = "; ".join(f"{files[i]} ({e})" for i, e in errors[:3])
    warnings.warn(f"skipped {len(errors)} unreadable image file(s) (corrupt or truncated): {first}"
                  f"{' ...' if len(errors) > 3 else ''}", stacklevel=3)


def _signature(path: Path) -> str:
    """Size and modification time: an image replaced under the same name changes the cache key."""
    try:
        stat = path.stat()
    except OSError:  # missing: it is reported (and skipped) when the cache is prepared
        return "missing"
    return f"{stat.st_size}\t{stat.st_mtime_ns}"


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = Path(temporary_path(str(path)))
    try:
        tmp.write_text(json.dumps(obj, indent=1))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, mininterval=1.0, dynamic_ncols=True)


# ------------------------------------------------------------------------------ dataset

class CaptionSource(Protocol):
    """Captions per sample: ``count(i)`` of them, ``get(i, j)`` the j-th."""

    def count(self, i: int) -> int: ...

    def get(self, i: int, j: int) -> str: ...


class ListCaptions:
    """Captions held in memory: ``captions[i]`` is the list for sample ``i``."""

    def __init__(self, captions: Sequence[Sequence[str]]) -> None:
        self.captions = [list(c) for c in captions]

    def count(self, i: int) -> int:
        return len(self.captions[i])

    def get(self, i: int, j: int) -> str:
        return self.captions[i][j]


class FaceImages(Dataset):
    """Samples over prepared (or directly decoded) images; see the module docstring.

    Args:
        rows: for each sample, its image's row in ``cache`` / index into ``files``.
        cache: the prepared ``.npy`` file (opened lazily, memory-mapped, in each process);
            when None, images are decoded from ``files`` on every access.
        captions, attributes: per sample (attributes: an int array of shape (N, A)).
    """

    def __init__(self, rows: Sequence[int], *, resolution: int, crop: Crop,
                 cache: str | os.PathLike | None = None, files: Sequence[str] | None = None,
                 captions: CaptionSource | None = None, vocab: Vocabulary | None = None,
                 attributes: np.ndarray | None = None, flip: bool = False) -> None:
        if cache is None and files is None:
            raise ValueError("FaceImages needs a prepared cache or the image files")
        if captions is not None and vocab is None:
            raise ValueError("captions need a vocabulary")
        self.rows = np.asarray(rows, dtype=np.int64)
        self.resolution, self.crop = int(resolution), crop
        self.cache = None if cache is None else str(cache)
        self.files = None if files is None else list(files)
        self.captions, self.vocab, self.flip = captions, vocab, bool(flip)
        self.attributes = None if attributes is None else np.asarray(attributes, dtype=np.int64)
        if self.attributes is not None and len(self.attributes) != len(self.rows):
            raise ValueError("one attribute row per sample is needed")
        self._images: np.ndarray | None = None
        self._bad: set[int] = set()

    def __getstate__(self) -> dict:  # never pickle the memory map's contents into workers
        state = dict(self.__dict__)
        state["_images"] = None
        return state

    def __len__(self) -> int:
        return len(self.rows)

    def image_array(self, index: int) -> np.ndarray:
        """uint8 (H, W, 3) of sample ``index``, before flipping."""
        row = int(self.rows[index])
        if self.cache is not None:
            if self._images is None:
                self._images = np.load(self.cache, mmap_mode="r")
            return self._images[row]
        return load_image(self.files[row], self.resolution, self.crop)

    def _decode_next_readable(self, index: int) -> tuple[np.ndarray, int]:
        """Direct decoding: an unreadable file is reported once and replaced by the next
        readable sample, so training never stops on one bad image."""
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            if i in self._bad:
                continue
            try:
                return self.image_array(i), i
            except DECODE_ERRORS as e:
                self._bad.add(i)
                warnings.warn(f"skipping unreadable image {self.files[int(self.rows[i])]}: {e}", stacklevel=3)
        raise RuntimeError("no image of this dataset could be decoded")

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(index)
        if self.cache is not None:
            array = self.image_array(i)
        else:
            array, i = self._decode_next_readable(i)
        flip = self.flip and bool(torch.rand(()) < 0.5)
        item: dict[str, Any] = {"image": to_tensor(array, flip)}
        if self.captions is not None:
            j = int(torch.randint(self.captions.count(i), ()).item())
            item["caption"] = torch.tensor(self.vocab.encode(self.captions.get(i, j)), dtype=torch.long)
            item["caption_index"] = j
        if self.attributes is not None:
            item["attributes"] = torch.from_numpy(self.attributes[i].copy())
        return item


# ---------------------------------------------------------------------------- datamodule

def split_by_group(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` with ``seed`` and hold out ``round(val_fraction * n)`` (at least
    one when the fraction is positive and n > 1); both halves sorted."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"dataset.val_fraction={val_fraction} must be in [0, 1)")
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class ImageDataModule(FaceDataModule):
    """Base of the datamodules over image files on disk (``root`` is mandatory).

    Subclasses implement :meth:`build` with :meth:`check_root`, :meth:`open_images` and
    :meth:`make_set`.
    """

    name = "images"
    LAYOUT = ""  # the expected directory layout, for error messages
    SOURCE = ""  # where the dataset is published

    def __init__(self, root: str | os.PathLike, crop_size: int | None = None,
                 crop_center: Sequence[float] | None = None, flip: bool = True, cache: bool = True,
                 cache_dir: str | os.PathLike | None = None, decode_workers: int | None = None,
                 progress: bool = True, **loader: Any) -> None:
        loader.setdefault("max_resolution", 1024)
        super().__init__(**loader)
        if root is None or str(root) in ("", "???"):
            raise ValueError(f"dataset.root is required: the directory holding\n{self.LAYOUT}")
        self.root = Path(root).expanduser()
        self.crop = Crop.from_config(crop_size, crop_center)
        self.flip = bool(flip)
        self.use_cache = bool(cache)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else Path.home() / ".cache" / "t2f" / "prepared"
        self.decode_workers = decode_workers
        self.progress = bool(progress)
        self.files: list[str] = []
        self.skipped: list[dict] = []  # unreadable images found while preparing
        self.image_cache: ImageCache | None = None
        self._reported_skips = False

    # -- helpers for subclasses ------------------------------------------------------------
    def missing(self, what: str) -> FileNotFoundError:
        return FileNotFoundError(
            f"{what}\nThe {self.name} dataset is expected under dataset.root={self.root} as:\n"
            f"{self.LAYOUT}\nIt is published at {self.SOURCE}"
        )

    def check_root(self) -> None:
        if not self.root.is_dir():
            raise self.missing(f"dataset.root={self.root} is not a directory.")

    def open_images(self, files: Sequence[str], base: Path | None = None) -> np.ndarray:
        """Use ``files`` (relative to ``base``, default root) as the image rows: prepares
        or loads the cache. Returns the rows that can be used (unreadable ones removed)."""
        base = self.root if base is None else base
        self.files = list(files)
        if not self.use_cache:
            self.image_cache = None
            self._file_paths = [str(base / f) for f in self.files]
            return np.arange(len(self.files))
        self.image_cache = ImageCache(self.cache_dir, self.name, base, self.files, self.resolution, self.crop)
        _, meta = self.image_cache.get(workers=self.decode_workers, progress=self.progress)
        self.skipped = list(meta.get("skipped", []))
        bad = {s["row"] for s in self.skipped}
        if bad and not self._reported_skips:
            report(f"{len(bad)} unreadable image(s) were skipped when {self.image_cache.path.name} was "
                   f"prepared (listed in {self.image_cache.meta_path})")
            self._reported_skips = True
        return np.array([i for i in range(len(self.files)) if i not in bad], dtype=np.int64)

    def make_set(self, rows: Sequence[int], *, train: bool, captions: CaptionSource | None = None,
                 attributes: np.ndarray | None = None) -> FaceImages:
        return FaceImages(
            rows, resolution=self.resolution, crop=self.crop,
            cache=self.image_cache.path if self.image_cache is not None else None,
            files=None if self.image_cache is not None else self._file_paths,
            captions=captions, vocab=self.vocab if captions is not None else None,
            attributes=attributes, flip=self.flip and train,
        )

    def prepare(self) -> dict[str, Any]:
        """Build the sets (preparing the cache); a summary for ``python -m t2f.data.prepare``."""
        self.setup("fit")
        return {
            "dataset": self.name, "root": str(self.root), "images": len(self.files),
            "skipped": len(self.skipped), "train": len(self.train_set),
            "val": len(self.val_set) if self.val_set is not None else 0,
            "cache": str(self.image_cache.path) if self.image_cache is not None else None,
            "vocabulary": len(self.vocab) if self.vocab is not None else None,
        }
