"""Images/s of the real-data pipeline: decoding files every epoch versus the prepared cache.

    python experiments/benchmark_data.py dataset=folder dataset.root=/path/to/images \
        dataset.resolution=64 [--n 2000] [--workers 2]

Takes the same Hydra overrides as ``run.py`` (the dataset is built from ``t2f/conf/``) and
measures, in one process, the dataset's ``__getitem__`` (the item a DataLoader worker
produces: float image in [-1, 1], flip, caption ids) over ``--n`` random samples:

1. direct: ``dataset.cache=false``: open, decode, crop, resize every image;
2. prepare: building the cache once (``--workers`` decoding processes), in a fresh
   temporary cache directory;
3. cached: the same items read from the memory-mapped cache;
4. loader: whole batches from the training DataLoader over the cache (``dataset.batch_size``,
   ``dataset.num_workers`` worker processes, ``dataset.pin_memory``), as training receives them.

``--step`` also times the training step with the same overrides (``experiments/benchmark.py``,
in a subprocess) and prints it beside the loader's rate: a loader slower than the step makes the
step wait.

Results from this repository are in ``experiments/results/benchmark_data.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def items_per_second(dataset, n: int, seed: int = 0) -> float:
    order = np.random.default_rng(seed).integers(0, len(dataset), size=n)
    dataset[int(order[0])]  # warm up (opens the memory map)
    t0 = time.perf_counter()
    for i in order:
        dataset[int(i)]
    return n / (time.perf_counter() - t0)


def loader_images_per_second(datamodule, n: int) -> float:
    """Images/s of whole training batches (workers started and one batch drawn before timing)."""
    batches = iter(datamodule.train_dataloader())
    next(batches)
    t0 = time.perf_counter()
    count = 0
    while count < n:
        count += next(batches)["image"].shape[0]
    return count / (time.perf_counter() - t0)


def step_images_per_second(overrides: list[str]) -> float:
    """The training step's images/s for the same overrides (experiments/benchmark.py)."""
    script = Path(__file__).with_name("benchmark.py")
    done = subprocess.run([sys.executable, str(script), *overrides, "logger=none", "--warmup", "5", "--steps", "20"],
                          capture_output=True, text=True)
    found = re.search(r"throughput: ([\d.]+) images/s", done.stdout)
    if found is None:
        raise SystemExit(f"benchmark.py failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="samples timed per mode")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes for the cache")
    parser.add_argument("--step", action="store_true", help="also time the training step, for comparison")
    args, overrides = parser.parse_known_args()

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from t2f.conf import CONFIG_DIR

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as cache_dir:
        common = [*overrides, f"dataset.cache_dir={cache_dir}", "dataset.progress=false",
                  f"dataset.decode_workers={args.workers}"]
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            direct_cfg = compose("config", overrides=[*common, "dataset.cache=false"])
            cached_cfg = compose("config", overrides=[*common, "dataset.cache=true"])

        direct = instantiate(direct_cfg.dataset)
        direct.setup("fit")
        n = min(args.n, len(direct.train_set) * 4)
        direct_rate = items_per_second(direct.train_set, n)

        cached = instantiate(cached_cfg.dataset)
        t0 = time.perf_counter()
        cached.setup("fit")
        prepare_s = time.perf_counter() - t0
        cached_rate = items_per_second(cached.train_set, n)
        loader_rate = loader_images_per_second(cached, n)
        size_mb = os.path.getsize(cached.image_cache.path) / 2**20

    r = cached.resolution
    print(f"dataset={type(cached).__name__} root={cached.root} images={len(cached.files)} "
          f"resolution={r} crop={cached.crop.as_dict()} samples timed={n}")
    print(f"{'mode':<34}{'images/s':>12}")
    print(f"{'direct decoding (every epoch)':<34}{direct_rate:>12.0f}")
    print(f"{'prepare cache once (' + str(args.workers) + ' procs)':<34}"
          f"{len(cached.files) / prepare_s:>12.0f}   ({prepare_s:.1f}s, {size_mb:.0f} MiB)")
    print(f"{'cached (memory-mapped .npy)':<34}{cached_rate:>12.0f}   ({cached_rate / direct_rate:.0f}x direct)")
    print(f"{'loader (batch ' + str(cached.batch_size) + ', ' + str(cached.num_workers) + ' workers)':<34}"
          f"{loader_rate:>12.0f}")
    if args.step:
        step = step_images_per_second(overrides)
        verdict = "never waits" if loader_rate > step else "WAITS for data: raise dataset.num_workers"
        print(f"{'training step (benchmark.py)':<34}{step:>12.0f}   (loader / step = {loader_rate / step:.1f}: "
              f"the step {verdict})")


if __name__ == "__main__":
    main()
