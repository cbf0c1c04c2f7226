"""Compare runs from their local files, offline, whatever logger they used.

``python -m t2f.compare RUN_OR_SWEEP_DIR... [--out DIR]``

A run directory holds ``config.yaml`` (the resolved config, written by ``t2f.train``) and the
logger's files: ``csv/metrics.csv``, TensorBoard event files under ``tensorboard/``, or W&B
offline runs ``wandb/offline-run-*/run-*.wandb``. A sweep directory (``multirun/<time>/``, or
any folder of runs) stands for the runs inside it. Writes ``comparison.md`` and
``comparison.csv`` (per run: the config values that differ between runs, then the final and
the best value of each loss and metric, with the direction that counts as best), and
``losses.png`` / ``metrics.png`` (curves against kimg, one line per run).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import re
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

Row = dict[str, float]
# The keys compared by default: the two training losses and each metric's main value.
DEFAULT_KEYS = re.compile(r"^(loss/[dg]|metrics/[^/]+)$")


class NotARunError(ValueError):
    """A path that is neither a run directory nor a directory of runs."""


@dataclass
class Run:
    path: Path
    config: dict[str, str]
    choices: dict[str, str] = field(default_factory=dict)   # config group -> option (Hydra's record)
    history: list[Row] = field(default_factory=list)
    source: str = "none"   # which logger's files the history came from
    name: str = ""


def direction(key: str) -> str | None:
    """'min' or 'max': which way a logged value improves (None: no such notion, e.g. a std)."""
    parts = key.split("/")
    name = parts[1] if parts[0] == "metrics" and len(parts) > 1 else parts[0]
    if name.endswith("_std"):
        return None
    if parts[0] == "loss" or name in ("swd", "swd_conditional", "fid", "kid"):
        return "min"
    if name in ("is", "alignment", "alignment_match", "alignment_accuracy", "r_precision", "classifier_accuracy"):
        return "max"
    return None  # also real faces' own values (_real, _floor) and diversity (best at 1, not at a maximum)


# --- finding runs ----------------------------------------------------------------------------

def _is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file() or (path / ".hydra" / "config.yaml").is_file()


def _natural(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def expand_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories, with each sweep directory replaced by the runs in it (in job order)."""
    runs: list[Path] = []
    for given in map(Path, paths):
        if _is_run(given):
            runs.append(given)
            continue
        inside = sorted((p for p in given.iterdir() if p.is_dir() and _is_run(p)), key=_natural) \
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


# --- reading histories -----------------------------------------------------------------------

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


def read_tensorboard_history(files: list[str]) -> list[Row]:
    """One row per ``log_metrics`` call: consecutive scalars of one step, until a tag repeats."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    rows: list[Row] = []
    row: Row = {}
    step = None
    for file in files:
        for event in EventFileLoader(file).Load():
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    number = float(value.simple_value)
                elif kind == "tensor":
                    array = make_ndarray(value.tensor)
                    if array.size != 1 or array.dtype.kind not in "biuf":
                        continue  # images, text
                    number = float(array.reshape(-1)[0])
                else:
                    continue
                if event.step != step or value.tag in row:
                    if row:
                        rows.append(row)
                    row, step = {}, event.step
                row[value.tag] = number
    if row:
        rows.append(row)
    return rows


def _leveldb_records(data: bytes) -> Iterator[bytes]:
    """Records of W&B's transaction log (LevelDB log format: 32 KiB blocks of chunks)."""
    block, header = 32768, 7
    pos, chunks = header, []   # the file starts with ':W&B' + magic + version
    while pos + header <= len(data):
        left = block - pos % block
        if left < header:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + header])
        pos += header
        if kind == 0 and length == 0:   # zero padding up to the next block
            pos += left - header
            continue
        chunks.append(data[pos:pos + length])
        pos += length
        if kind in (1, 4):   # FULL or LAST
            yield b"".join(chunks)
            chunks = []


def read_wandb_history(files: list[str]) -> list[Row]:
    """History rows from W&B offline runs' ``.wandb`` files (one row per ``wandb.log``)."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for file in files:
        data = Path(file).read_bytes()
        if data[:4] != b":W&B":
            raise ValueError(f"{file} is not a W&B transaction log")
        for raw in _leveldb_records(data):
            record = pb.Record()
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") != "history":
                continue
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                number = _number(json.loads(item.value_json)) if not key.startswith("_") else None
                if number is not None:
                    row[key] = number
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
    """The logged rows of a run from the first logger with files: csv, tensorboard, wandb."""
    csv_files = sorted(glob.glob(str(run / "csv" / "**" / "metrics.csv"), recursive=True))
    if csv_files:
        return "csv", [row for f in csv_files for row in read_csv_history(Path(f))]
    tb_files = sorted(glob.glob(str(run / "tensorboard" / "**" / "events.out.tfevents.*"), recursive=True))
    if tb_files:
        return "tensorboard", read_tensorboard_history(tb_files)
    wandb_files = [str(f) for _, _, folder in wandb_run_folders(run) for f in sorted(folder.glob("*.wandb"))]
    if wandb_files:
        return "wandb", read_wandb_history(wandb_files)
    return "none", []


def load_run(path: Path) -> Run:
    source, history = read_history(path)
    if source == "none":
        print(f"warning: {path} has no csv, tensorboard or wandb logs (it failed early, or logger=none): "
              "only its config is compared", file=sys.stderr)
    return Run(path=path, config=load_config(path), choices=load_choices(path), history=history,
               source=source)


# --- the table and the plots -----------------------------------------------------------------

def _names(paths: list[Path]) -> list[str]:
    """The shortest path suffixes that tell the runs apart (a job number keeps its sweep)."""
    parts = [p.resolve().parts for p in paths]
    for n in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-max(n, 2 if p[-1].isdigit() else 1):]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def _differing(runs: list[Run], attribute: str) -> list[str]:
    keys = list(dict.fromkeys(k for run in runs for k in getattr(run, attribute)))
    return [k for k in keys if len({getattr(run, attribute).get(k) for run in runs}) > 1]


def differing_config(runs: list[Run]) -> tuple[list[str], list[str]]:
    """Config groups whose option differs (``model``: dcgan vs t2f), and the other config
    values that differ; values inside a group whose option differs follow from it: left out."""
    groups = _differing(runs, "choices")
    keys = [k for k in _differing(runs, "config") if not any(k.startswith(f"{g}.") for g in groups)]
    return groups, keys


def metric_keys(runs: list[Run], pattern: re.Pattern = DEFAULT_KEYS) -> list[str]:
    keys = {k for run in runs for row in run.history for k in row if pattern.match(k)}
    return sorted(keys, key=lambda k: (not k.startswith("loss/"), k))


def summarize(run: Run, key: str) -> tuple[float | None, float | None]:
    """(final, best) of a key over the run's history; best follows ``direction(key)`` and
    skips NaN, while a NaN final value (a diverged run) is reported as it is."""
    values = [row[key] for row in run.history if key in row]
    finite = [v for v in values if math.isfinite(v)]
    best = {"min": min, "max": max}.get(direction(key) or "")
    return (values[-1] if values else None), (best(finite) if best and finite else None)


def table(runs: list[Run], keys: list[str]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: run, differing config values, final kimg, final/best per metric key."""
    groups, config_keys = differing_config(runs)
    header = ["run", *groups, *config_keys, "kimg", "log"]
    for key in keys:
        header += [f"{key} final", f"{key} best ({direction(key)})" if direction(key) else f"{key} best"]
    rows = []
    for run in runs:
        kimgs = [row["kimg"] for row in run.history if "kimg" in row]
        row = [run.name, *(run.choices.get(g) for g in groups), *(run.config.get(k) for k in config_keys),
               kimgs[-1] if kimgs else None, run.source]
        for key in keys:
            row += list(summarize(run, key))
        rows.append(row)
    return header, rows


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str) and len(value) > 8 and re.fullmatch(r"-?\d*\.\d+(e-?\d+)?", value):
        value = float(value)  # a sampled hyperparameter such as 0.000587194737873281
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def to_markdown(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])


def plot(runs: list[Run], keys: list[str], path: Path, title: str) -> bool:
    """One panel per key, one line per run, against kimg; False when nothing was logged."""
    keys = [k for k in keys if any(k in row for run in runs for row in run.history)]
    if not keys:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for run in runs:
            points = [(row["kimg"], row[key]) for row in run.history if key in row and "kimg" in row]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, label=run.name, linewidth=1.2, marker="o" if len(xs) < 20 else None,
                        markersize=3)
        best = f" ({direction(key)} is best)" if direction(key) else ""
        ax.set(title=f"{key}{best}", xlabel="kimg")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


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


def compare(paths: list[str | Path], out: str | Path) -> dict[str, Path]:
    """Reads the runs, writes the table and plots into ``out``; returns what was written."""
    runs = load_runs(expand_runs(paths))
    for run, name in zip(runs, _names([r.path for r in runs])):
        run.name = name
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = metric_keys(runs)
    header, rows = table(runs, keys)
    written = {"markdown": out / "comparison.md", "csv": out / "comparison.csv"}
    written["markdown"].write_text(to_markdown(header, rows))
    write_csv(written["csv"], header, rows)
    for name, selected in (("losses", [k for k in keys if k.startswith("loss/")]),
                           ("metrics", [k for k in keys if k.startswith("metrics/")])):
        if plot(runs, selected, out / f"{name}.png", name):
            written[name] = out / f"{name}.png"
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m t2f.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or sweep directories (multirun/<time>)")
    parser.add_argument("--out", default=None,
                        help="output directory (default: outputs/compare/<date_time>)")
    args = parser.parse_args(argv)
    out = args.out or os.path.join("outputs", "compare", time.strftime("%Y-%m-%d_%H-%M-%S"))
    try:
        written = compare(args.runs, out)
    except NotARunError as error:
        parser.error(str(error))
    print(written["markdown"].read_text())
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
