"""Train a face GAN: `python run.py [group=option ...] [key=value ...]` (see conf/)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from t2f.train import train  # after Hydra parsed the command line: fast --help

    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


if __name__ == "__main__":
    main()
