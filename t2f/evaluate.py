"""Evaluate a checkpoint: ``python -m t2f.evaluate ckpt=PATH metrics=[swd,alignment,fid] num_samples=10000 seeds=3``.

The module and datamodule are rebuilt from the resolved config stored in the checkpoint
(``ckpt["t2f"]["config"]``), the weights loaded, and the stage/alpha restored by the module's
``on_load_checkpoint``, so a progressive model is measured at the resolution it had reached.
The metrics are those of training (``conf/metrics``, the same ``MetricSuite`` and the same
real-statistics cache). Samples come from the EMA generator; text-conditional models get
validation captions. Prints a table of mean ± std over seeds with the protocol beside each
number, and writes the same as JSON.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from t2f.checkpoints import load_checkpoint, resolve_device
from t2f.utils import text_table

__all__ = ["evaluate", "format_table", "load_checkpoint"]


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the evaluation of ``cfg`` (conf/evaluate.yaml); returns the report written as JSON."""
    from hydra.utils import instantiate

    device = resolve_device(str(cfg.device))
    module, datamodule, ckpt = load_checkpoint(cfg.ckpt, device)
    if not cfg.get("metrics"):
        raise ValueError("choose metrics, e.g. metrics=[swd,alignment,fid]")
    callback = instantiate(cfg.metrics, num_samples=cfg.num_samples, num_real=cfg.num_real,
                           batch_size=cfg.batch_size)
    suite = callback.suite
    seeds = [int(cfg.seed) + i for i in range(int(cfg.seeds))]
    runs = [suite.evaluate(module, datamodule, module.run_config["dataset"], seed=s) for s in seeds]

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
        "model": type(module).__name__,
        "kimg": module.kimg,
        "resolution": runs[0].resolution,
        "alpha": getattr(module, "alpha", None),
        "seeds": seeds,
        "num_samples": int(cfg.num_samples),
        "notes": sorted({n for r in runs for n in r.notes}),
        "metrics": metrics,
    }
    out = Path(cfg.out).expanduser() if cfg.get("out") else Path(cfg.ckpt).expanduser().with_suffix(".metrics.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(format_table(report))
    print(f"Wrote {out}")
    report["out"] = str(out)
    return report


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table: metric, mean ± std over seeds, protocol."""
    head = (f"{report['model']} at {report['kimg']:.1f} kimg, {report['resolution']}px, "
            f"{report['num_samples']} samples x seeds {report['seeds']}  ({report['checkpoint']})")
    rows = [(name, f"{m['mean']:.4f} ± {m['std']:.4f}", m["protocol"] or "") for name, m in report["metrics"].items()]
    lines = [head, text_table(("metric", "mean ± std", "protocol"), rows)]
    lines += [f"note: {n}" for n in report["notes"]]
    if not rows:
        lines.append("(no metric could be computed: see the warnings above)")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    OmegaConf.resolve(cfg)
    evaluate(cfg)


if __name__ == "__main__":
    main()
