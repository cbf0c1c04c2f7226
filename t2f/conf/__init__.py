"""The Hydra configs, shipped inside the package so that an installed t2f runs from any directory."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
