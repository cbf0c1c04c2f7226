"""Evaluate a checkpoint: ``python -m t2f.evaluate ckpt=PATH metrics=[swd,alignment,fid] num_samples=10000 seeds=3``,
or score a folder of images against another: ``python -m t2f.evaluate images=DIR real_images=DIR metrics=fid``.

The module and datamodule are rebuilt from the resolved config stored in the checkpoint
(``ckpt["t2f"]["config"]``), the weights loaded, and the stage/alpha restored by the module's
``on_load_checkpoint``, so a progressive model is measured at the resolution it had reached.
The metrics are those of training (``conf/metrics``, the same ``MetricSuite`` and the same
real-statistics cache). Samples come from the EMA generator; text-conditional models get
validation captions. Prints each protocol once, then a table of mean ± std over seeds with its protocol label,
and writes the same as JSON.

With ``images`` and ``real_images`` (two folders of PNG/JPEG images) there is no checkpoint:
FID, KID and IS of ``images`` against ``real_images`` are computed as
``torch_fidelity.calculate_metrics(input1=images, input2=real_images, ...)`` computes them (the
same files, decoding, resize and numbers), with the ``metrics.inception`` options; the KID subset
size is clamped to the image counts. The equivalent torch-fidelity call is printed and saved.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from t2f.checkpoints import load_checkpoint, resolve_device, user_errors
from t2f.export import check_count, check_psi
from t2f.utils import check_output_file, check_seed, text_table

__all__ = ["evaluate", "evaluate_folders", "format_table", "load_checkpoint"]


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the evaluation of ``cfg`` (conf/evaluate.yaml); returns the report written as JSON."""
    from hydra.utils import instantiate

    if cfg.get("images") or cfg.get("real_images"):
        return evaluate_folders(cfg)
    if not cfg.get("ckpt"):
        raise ValueError("give ckpt=PATH (a checkpoint written by training), or images=DIR real_images=DIR "
                         "metrics=fid to score a folder of images against another")
    if not cfg.get("metrics"):
        raise ValueError("choose metrics, e.g. metrics=[swd,alignment,fid]")
    counts = {key: check_count(cfg.get(key), key) for key in ("num_samples", "num_real", "batch_size", "seeds")}
    seed = check_seed(cfg.seed)
    psi = check_psi(cfg.get("psi", 1.0))
    device = resolve_device(str(cfg.device))
    module, datamodule, ckpt = load_checkpoint(cfg.ckpt, device)
    callback = instantiate(cfg.metrics, num_samples=counts["num_samples"], num_real=counts["num_real"],
                           batch_size=counts["batch_size"])
    suite = callback.suite
    seeds = [seed + i for i in range(counts["seeds"])]
    runs = [suite.evaluate(module, datamodule, module.run_config["dataset"], seed=s, psi=psi) for s in seeds]

    metrics: dict[str, Any] = {}
    for name in runs[0].values:
        values = [r.values[name] for r in runs if name in r.values]
        protocol = runs[0].protocols.get(name)
        if protocol is not None and "seed" in protocol.options:
            protocol = protocol.replace(options={**protocol.options, "seed": seeds})
        finite = [v for v in values if math.isfinite(v)]
        metrics[name] = {
            "mean": statistics.fmean(finite) if finite else float("nan"),
            "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
            "values": values,
            "protocol": protocol.describe() if protocol is not None else None,
            "protocol_key": protocol.key() if protocol is not None else None,
            "protocol_fields": protocol.to_dict() if protocol is not None else None,
        }
    report = {
        "checkpoint": str(Path(cfg.ckpt).expanduser().resolve()),
        "model": module.generator.family,
        "kimg": module.kimg,
        "resolution": runs[0].resolution,
        "alpha": getattr(module, "alpha", None),
        "seeds": seeds,
        "psi": psi,
        "num_samples": int(cfg.num_samples),
        "notes": sorted({n for r in runs for n in r.notes}),
        "metrics": metrics,
    }
    out = Path(cfg.out).expanduser() if cfg.get("out") else Path(cfg.ckpt).expanduser().with_suffix(".metrics.json")
    print(format_table(report))
    return write_report(report, out)


def evaluate_folders(cfg: DictConfig) -> dict[str, Any]:
    """FID/KID/IS of folder ``cfg.images`` against ``cfg.real_images``, torch-fidelity's numbers, so
    that samples saved by any tool are scored by the reference protocol; returns the JSON report."""
    from t2f.metrics.inception import (
        INCEPTION,
        REPORTED_NAMES,
        RNG_SEED,
        image_files,
        score_image_folders,
    )

    metrics_cfg = cfg.get("metrics") or {}
    opts = metrics_cfg.get("inception")
    if not opts:
        raise ValueError("scoring folders computes FID/KID/IS: add metrics=fid "
                         "(and metrics.inception_weights=PATH where the weights cannot be downloaded)")
    if not cfg.get("images") or not cfg.get("real_images"):
        raise ValueError("give both images=DIR (the images to score) and real_images=DIR (the images to compare with)")
    images, real = (str(Path(p).expanduser().resolve()) for p in (cfg.images, cfg.real_images))
    counts = len(image_files(images)), len(image_files(real))
    options = {"kid_subset_size": min(int(opts.kid_subset_size), *counts), "kid_subsets": int(opts.kid_subsets),
               "isc_splits": int(opts.is_splits), "rng_seed": RNG_SEED}  # torch-fidelity's names
    weights = metrics_cfg.get("inception_weights") or None
    extractor = metrics_cfg.get("feature_extractor") or INCEPTION
    values = score_image_folders(
        images, real, weights, names=list(opts.names), kid_subset_size=options["kid_subset_size"],
        kid_subsets=options["kid_subsets"], is_splits=options["isc_splits"], seed=options["rng_seed"],
        batch_size=int(cfg.batch_size), device=resolve_device(str(cfg.device)), feature_extractor=extractor)
    features = (f"feature_extractor_weights_path={weights!r}" if extractor == INCEPTION
                else f"feature_extractor=<the module in {weights}>")
    reference = (f"torch_fidelity.calculate_metrics(input1={images!r}, input2={real!r}, fid=True, kid=True, "
                 f"isc=True, {features}, " + ", ".join(f"{k}={v}" for k, v in options.items()) + ")")
    report = {"images": images, "real_images": real, "num_images": counts[0], "num_real": counts[1],
              "inception_weights": weights, "options": options, "reference": reference,
              "metrics": {REPORTED_NAMES[k]: v for k, v in values.items()}}
    out = Path(cfg.out).expanduser() if cfg.get("out") else Path(images).with_name(Path(images).name + ".metrics.json")
    print(f"{images} ({counts[0]} images) against {real} ({counts[1]} images)")
    print(text_table(("metric", "value"), [(k, f"{v:.6g}") for k, v in report["metrics"].items()]))
    print(f"equal to {reference}")
    return write_report(report, out)


def write_report(report: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write the JSON after the table is printed: a folder that cannot be written costs the file,
    never the numbers (an error saying where it could not write, and how to write elsewhere)."""
    try:
        check_output_file(out, example="metrics.json").write_text(json.dumps(report, indent=2))
    except (OSError, ValueError) as error:
        raise ValueError(f"the results above were not saved: {error}") from None
    print(f"Wrote {out}")
    report["out"] = str(out)
    return report


def format_table(report: dict[str, Any]) -> str:
    """Plain-text report: each protocol once (P1, P2, ...), then metric | value | protocol label.

    The value is the mean, with ± the std over seeds when there are several seeds."""
    psi = report.get("psi", 1.0)
    head = (f"{report['model']} at {report['kimg']:.1f} kimg, {report['resolution']}px, "
            f"{report['num_samples']} samples x seeds {report['seeds']}{'' if psi == 1.0 else f', psi={psi:g}'}"
            f"  ({report['checkpoint']})")
    several = len(report.get("seeds") or []) > 1
    labels: dict[str, str] = {}
    rows = []
    for name, m in report["metrics"].items():
        protocol = m["protocol"] or ""
        label = labels.setdefault(protocol, f"P{len(labels) + 1}") if protocol else ""
        value = f"{m['mean']:.4f} ± {m['std']:.4f}" if several else f"{m['mean']:.4f}"
        rows.append((name, value, label))
    lines = [head] + [f"{label}: {protocol}" for protocol, label in labels.items()]
    lines.append(text_table(("metric", "mean ± std" if several else "value", "protocol"), rows))
    lines += [f"note: {n}" for n in report["notes"]]
    if not rows:
        lines.append("(no metric could be computed: see the warnings above)")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    OmegaConf.resolve(cfg)
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
