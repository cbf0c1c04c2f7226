"""Reading run directories: the resolved config, Hydra's choices and the CSV log.

A run directory holds ``config.yaml`` (written by ``t2f.train``; ``.hydra/config.yaml`` for runs
Hydra launched) and, whatever logger the run used, ``csv/metrics.csv``: every logger config keeps
a CSV log beside its own files, so tools read runs without parsing W&B's or TensorBoard's
binary formats. A sweep directory (``multirun/<time>/``, or any folder of runs) stands for the
runs inside it.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

Row = dict[str, float]


class NotARunError(ValueError):
    """A path that is neither a run directory nor a directory of runs."""


@dataclass
class Run:
    path: Path
    config: dict[str, str]
    choices: dict[str, str] = field(default_factory=dict)   # config group -> option (Hydra's record)
    history: list[Row] = field(default_factory=list)
    source: str = "none"   # "csv" when the run kept its CSV log (every logger does), "none" without one
    name: str = ""


def is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file() or (path / ".hydra" / "config.yaml").is_file()


def _natural(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def expand_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories, with each sweep directory replaced by the runs in it (in job order)."""
    runs: list[Path] = []
    for given in map(Path, paths):
        if is_run(given):
            runs.append(given)
            continue
        inside = sorted((p for p in given.iterdir() if p.is_dir() and is_run(p)), key=_natural) \
            if given.is_dir() else []
        if not inside:
            raise NotARunError(
                f"{given} is not a run directory (no config.yaml or .hydra/config.yaml) nor a sweep "
                "directory holding run directories (such as multirun/<time>/0, 1, ...)"
            )
        runs.extend(inside)
    return runs


def _flatten(node: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(node) if isinstance(node, (list, tuple)) else str(node)}


def load_config(run: Path) -> dict[str, str]:
    """The run's config as ``dotted.key -> value``; paths inside the run read ``<run>``."""
    resolved = run / "config.yaml"
    cfg = OmegaConf.load(resolved if resolved.is_file() else run / ".hydra" / "config.yaml")
    flat = _flatten(OmegaConf.to_container(cfg, resolve=False))
    own = flat.get("paths.output_dir")
    if own and own not in ("None", "${hydra:runtime.output_dir}"):
        flat = {k: v.replace(own, "<run>") for k, v in flat.items()}
    return flat


def load_choices(run: Path) -> dict[str, str]:
    """The config group options of a run (``model: dcgan``) from Hydra's ``.hydra/hydra.yaml``."""
    record = run / ".hydra" / "hydra.yaml"
    if not record.is_file():
        return {}
    choices = OmegaConf.select(OmegaConf.load(record), "hydra.runtime.choices") or {}
    return {str(g): str(o) for g, o in choices.items() if not str(g).startswith("hydra/")}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_csv_history(path: Path) -> list[Row]:
    rows = []
    with open(path, newline="") as f:
        for record in csv.DictReader(f):
            row = {k: n for k, v in record.items() if (n := _number(v)) is not None}
            if row:
                rows.append(row)
    return rows


_WANDB_RUN_DIR = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-([A-Za-z0-9]+)(?:-\d+)?$")


def wandb_run_folders(run_dir: str | os.PathLike) -> list[tuple[str, str, Path]]:
    """``(start time, run id, folder)`` of the W&B run folders in a run directory, oldest first.

    Folders are ``wandb/[offline-]run-<time>-<id>``; W&B appends ``-<n>`` when a resumed run
    starts within the same second as the folder it continues.
    """
    found = []
    for path in Path(run_dir).glob("wandb/*run-*"):
        match = _WANDB_RUN_DIR.match(path.name)
        if match and path.is_dir():
            found.append((match.group(1), match.group(2), path))
    return sorted(found)


def read_history(run: Path) -> tuple[str, list[Row]]:
    """The logged rows of a run from its CSV log, which every logger but ``none`` writes."""
    csv_files = sorted(glob.glob(str(run / "csv" / "**" / "metrics.csv"), recursive=True))
    if csv_files:
        return "csv", [row for f in csv_files for row in read_csv_history(Path(f))]
    return "none", []


def load_run(path: Path) -> Run:
    source, history = read_history(path)
    if source == "none":
        print(f"warning: {path} has no csv/metrics.csv (it failed early, ran with logger=none, or predates "
              "the CSV log every logger keeps): only its config is compared", file=sys.stderr)
    return Run(path=path, config=load_config(path), choices=load_choices(path), history=history,
               source=source)


def load_runs(paths: list[Path]) -> list[Run]:
    """The runs that can be read; one whose files are damaged (a garbled config.yaml or
    metrics.csv, say of a run killed while writing) is skipped with a warning, not the table."""
    runs = []
    for path in paths:
        try:
            runs.append(load_run(path))
        except Exception as error:  # YAML, CSV, protobuf, encoding errors: all mean "unreadable"
            reason = (str(error).splitlines() or [""])[0]
            print(f"warning: skipping {path}: its files cannot be read ({type(error).__name__}: {reason})",
                  file=sys.stderr)
    if not runs:
        raise NotARunError(f"none of the {len(paths)} run(s) could be read (see the warnings above)")
    return runs
