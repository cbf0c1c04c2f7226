"""Train a face GAN: `python run.py [group=option ...] [key=value ...]` (configs in t2f/conf/).

The same command is installed as `t2f-train` and runs as `python -m t2f.train`.
"""

from t2f.cli import train_main

if __name__ == "__main__":
    train_main()
