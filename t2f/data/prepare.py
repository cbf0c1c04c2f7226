"""Prepare a dataset's image cache ahead of training, with the same overrides as ``run.py``.

    python -m t2f.data.prepare dataset=celeba dataset.root=/data/celeba dataset.resolution=128

composes ``t2f/conf/`` exactly like a training run, builds the datamodule (decoding every image
once into the memory-mapped cache, with a progress bar and a pool of
``dataset.decode_workers`` processes), and prints what was prepared. A training run with
the same dataset options then starts from the cache; a run with other options (crop,
resolution, files) prepares its own, so a stale cache is never used.
"""

from __future__ import annotations

import sys

from t2f.conf import CONFIG_DIR


def prepare(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    datamodule = instantiate(cfg.dataset)
    if hasattr(datamodule, "prepare"):
        return datamodule.prepare()
    datamodule.setup("fit")  # e.g. the synthetic faces: rendered and cached on setup
    return {"dataset": type(datamodule).__name__, "train": len(datamodule.train_set)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    from t2f.checkpoints import user_errors

    with user_errors():  # a missing root or an unwritable cache folder: one line
        summary = prepare(argv)
    for key, value in summary.items():
        print(f"{key:>12}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
