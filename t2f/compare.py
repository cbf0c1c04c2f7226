"""Compare runs from their local files, offline, whatever logger they used.

``python -m t2f.compare RUN_OR_SWEEP_DIR... [--out DIR]``

Runs are read by :mod:`t2f.runs`: the resolved config and the CSV log that every logger keeps
(``csv/metrics.csv``); a sweep directory (``multirun/<time>/``) stands for the runs inside it.
Writes ``comparison.md`` and ``comparison.csv`` (per run: the config values that differ between runs, then the final and
the best value of each loss and metric, with the direction that counts as best), and
``losses.png`` / ``metrics.png`` (curves against kimg, one line per run).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from t2f.runs import NotARunError, Run, expand_runs, load_runs

# The keys compared by default: the two training losses and each metric's main value.
DEFAULT_KEYS = re.compile(r"^(loss/[dg]|metrics/[^/]+)$")


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
