"""Issue 16's study on real faces: many training runs side by side, each scored the same way.

    python experiments/real_faces_study.py --data /data/celeba --out /tmp/study [--only NAME ...]
        [--parallel N] [--smoke] [--deadline SECONDS] [--seeds N] [--data-64 ROOT]

Every job in ``JOBS`` trains with ``run.py`` at 32 px (the ``*_64`` jobs: 64 px, from ``--data-64`` if
given) on CelebA (``dataset=celeba``) with SWD
logged every 20 kimg (``metrics=swd``: the SWD-against-kimg curves, 2,048 training images), then
its last checkpoint is scored by ``python -m t2f.evaluate`` (2,000 samples of the EMA generator;
T2F models also get ``alignment`` and ``diversity``; the 1,000-image runs are scored against the
500 held-out validation images) and by ``experiments/colour_noise.py`` (the coloured speckles:
high-frequency chroma against real faces'). ``--deadline`` stops every run still training after
that many seconds (it saves its checkpoint, which is scored as it stands). Jobs run as separate processes, ``--parallel`` at a time, each
with one thread, so a 16-core GPU machine runs them all at once; start CUDA's multi-process service
first (``nvidia-cuda-mps-control -d``) so that their small kernels share the GPU instead of taking
turns (on an H100, six jobs ran 300 kimg of StyleGAN in 5.7 minutes). ``--smoke`` shrinks every job
to a few batches at 16 px to check the pipeline. Prints one table and writes ``summary.json``
(every figure, the curves, the commands) and ``summary.md`` under ``--out``; each job's run
directory holds its sample grids, ``metrics.csv`` and logs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CURVE = ["metrics=swd", "metrics.every_kimg=20"]
STYLEGAN_300 = "model.schedule.kimg.32=220"  # 15 + 25 + 40 + 220 kimg: 300 in all
# StyleGAN grown fast: 4 + 8 + 12 kimg below 32 px, then 96 at 32 px (120 in all)
FAST = ["model.schedule.kimg.4=4", "model.schedule.kimg.8=8", "model.schedule.kimg.16=12", "model.schedule.kimg.32=96"]
# the StyleGAN runs recorded in experiments/results/real_faces.md before its default became 0.005
PAPER_LR = ["model.schedule.lr=0.001"]  # both networks, every resolution
NS_R1 = ["model.loss.name=nonsaturating", "model.loss.r1_gamma=1"]
WIDE = ["model.generator.fmap_base=2048", "model.discriminator.fmap_base=2048",  # 128 channels at every
        "model.generator.fmap_max=128", "model.discriminator.fmap_max=128"]  # resolution up to 32 px
T2F_REAL = ["model=t2f", "model.loss.mode_seeking=1", "model.text.word_prediction.image=0"]
FLAT = ["model.schedule.start_resolution=32"]  # no progressive growing: the whole run at 32 px
DCGAN_SIZE = ["model.generator.fmap_base=1024", "model.discriminator.fmap_base=1024",  # 128, 128, 128, 64 channels:
              "model.generator.fmap_max=128", "model.discriminator.fmap_max=128"]  # 1.22M / 1.11M, DCGAN's 1.07M / 0.66M
# model=stylegan's widths before they became DCGAN's size (64, 64, 64, 32 channels from 4 to 32 px)
FORMER_WIDTHS = ["model.generator.fmap_base=512", "model.discriminator.fmap_base=512",
                 "model.generator.fmap_max=64", "model.discriminator.fmap_max=64"]
# model=stylegan as it was when the grown jobs ran (recorded in real_faces.md): growing from 4 px, with
# style mixing
SG_GROWN = ["model=stylegan", "model.schedule.start_resolution=4", "model.generator.style_mixing_prob=0.9"]
SG_FORMER = [*SG_GROWN, *FORMER_WIDTHS]  # and at its former widths
# StyleGAN without growth at DCGAN's size for 300 kimg (model=stylegan's defaults since, but for the length)
SG_FLAT_BIG = ["model=stylegan", *FLAT, "model.schedule.kimg.32=300", *DCGAN_SIZE]
NS_R1_10 = ["model.loss.name=nonsaturating", "model.loss.r1_gamma=10"]
HALF_LR = ["model.schedule.lr=0.0025"]
T2F_REAL_FLAT = [*T2F_REAL, *FLAT, "model.schedule.kimg.32=114"]  # experiment=t2f_celeba32 but its contrastive weight (5 here) and mismatches (nearest here)
SUBSET = ["+dataset.max_images=1000", "model.total_kimg=200"]
AUGMENT = "model.augment.policy=[color,translation,cutout]"
# experiment=t2f_celeba32 with TAC-GAN's twin word head and contrastive weight 0.25 (its setting since the
# fourteenth session, but for the head's weight, set per job), unbalanced and without the word reader
TWIN = ["experiment=t2f_celeba32", "model.text.word_prediction.image_target=twin", "model.text.contrastive.weight=0.25",
        "model.text.word_prediction.balance=0", "model.text.word_reader=null"]
# experiment=t2f_celeba32 before then: no image-side word head (nor its reader), contrastive weight 0.5
FORMER_PRESET = ["experiment=t2f_celeba32", "model.text.word_prediction.image=0", "model.text.contrastive.weight=0.5",
                 "model.text.word_prediction.balance=0", "model.text.word_reader=null"]

# name -> (overrides, evaluation metrics, real split of the evaluation)
JOBS: dict[str, tuple[list[str], str, str]] = {
    "dcgan": (["model=dcgan", "model.total_kimg=300"], "[swd]", "train"),
    "stylegan": ([*SG_FORMER, *PAPER_LR, STYLEGAN_300], "[swd]", "train"),
    "stylegan_lr": ([*SG_FORMER, STYLEGAN_300, "+model.schedule.lr.32=0.002"], "[swd]", "train"),
    "stylegan_ns_r1": ([*SG_FORMER, *PAPER_LR, STYLEGAN_300, *NS_R1_10], "[swd]", "train"),
    "stylegan_ns_r1_lr": ([*SG_FORMER, STYLEGAN_300, *NS_R1_10,
                           "model.schedule.lr=0.002", "model.schedule.batch_size=32"], "[swd]", "train"),
    "sg_default": ([*SG_FORMER, *PAPER_LR, "model.schedule.kimg.32=80"], "[swd]", "train"),
    "sg_fast": ([*SG_FORMER, *PAPER_LR, *FAST], "[swd]", "train"),
    "sg_fast_ns_r1_10": ([*SG_FORMER, *PAPER_LR, *FAST, *NS_R1_10],
                         "[swd]", "train"),
    "sg_fast_ns_r1_1": ([*SG_FORMER, *PAPER_LR, *FAST, *NS_R1], "[swd]", "train"),
    "sg_fast_ns_r1_01": ([*SG_FORMER, *PAPER_LR, *FAST, "model.loss.name=nonsaturating", "model.loss.r1_gamma=0.1"],
                         "[swd]", "train"),
    "sg_fast_ns_r1_1_lr2": ([*SG_FORMER, *FAST, *NS_R1, "model.schedule.lr=0.002"], "[swd]", "train"),
    "sg_fast_ns_r1_1_w128": ([*SG_GROWN, *PAPER_LR, *FAST, *NS_R1, "model.generator.fmap_base=512", "model.discriminator.fmap_base=512", "model.generator.fmap_max=128", "model.discriminator.fmap_max=128"], "[swd]", "train"),
    # next: the default lr 0.005 at 32 px (16 px, 24 kimg on CPU: SWD 64.6 -> 36.8; DCGAN 30.5)
    "sg_lr005": ([*SG_FORMER, STYLEGAN_300], "[swd]", "train"),
    "sg_fast_lr005": ([*SG_FORMER, *FAST], "[swd]", "train"),
    "sg_fast_lr005_ns_r1_10": ([*SG_FORMER, *FAST, *NS_R1_10],
                               "[swd]", "train"),
    "sg_fast_w128": ([*SG_GROWN, *PAPER_LR, *FAST, *WIDE], "[swd]", "train"),
    "sg_fast_w128_ns_r1_10": ([*SG_GROWN, *PAPER_LR, *FAST, *WIDE, *NS_R1_10], "[swd]", "train"),
    "sg_fast_w256_ns_r1_10": ([*SG_GROWN, *PAPER_LR, *FAST, "model.generator.fmap_base=4096", "model.discriminator.fmap_base=4096", "model.generator.fmap_max=256", "model.discriminator.fmap_max=256",
                               *NS_R1_10], "[swd]", "train"),
    "sg_flat": (["model=stylegan", *FLAT, "model.schedule.kimg.32=300", *FORMER_WIDTHS], "[swd]", "train"),
    "sg_flat_big": (SG_FLAT_BIG, "[swd]", "train"),
    "sg_flat_big_ns_r1_10": ([*SG_FLAT_BIG, *NS_R1_10], "[swd]", "train"),
    "sg_flat_big_lr0025": ([*SG_FLAT_BIG, *HALF_LR], "[swd]", "train"),
    "sg_flat_big_ns_r1_10_lr0025": ([*SG_FLAT_BIG, *NS_R1_10, *HALF_LR], "[swd]", "train"),
    "sg_flat_big_ns_r1_10_ema10": ([*SG_FLAT_BIG, *NS_R1_10, "model.ema_half_life_kimg=10"], "[swd]", "train"),
    # second seeds of the StyleGAN-against-DCGAN curves
    "sg_flat_big_seed1": ([*SG_FLAT_BIG, "seed=1"], "[swd]", "train"),
    "dcgan_seed1": (["model=dcgan", "model.total_kimg=300", "seed=1"], "[swd]", "train"),
    "t2f_real_flat": (T2F_REAL_FLAT, "[swd,alignment,diversity]", "train"),
    "t2f_flat": (["model=t2f", *FLAT, "model.schedule.kimg.32=114"], "[swd,alignment,diversity]", "train"),
    "t2f_real_flat_c10": ([*T2F_REAL_FLAT, "model.text.contrastive.weight=10"], "[swd,alignment,diversity]", "train"),
    "t2f_real_flat_c1": ([*T2F_REAL_FLAT, "model.text.contrastive.weight=1"], "[swd,alignment,diversity]", "train"),
    "t2f_real_flat_c05": ([*T2F_REAL_FLAT, "model.text.contrastive.weight=0.5"], "[swd,alignment,diversity]", "train"),
    "t2f_real_flat_c025": ([*T2F_REAL_FLAT, "model.text.contrastive.weight=0.25"], "[swd,alignment,diversity]", "train"),
    "t2f_real_flat_kl001": ([*T2F_REAL_FLAT, "model.generator.kl_weight=0.01"], "[swd,alignment,diversity]", "train"),
    "t2f_real_w128": ([*T2F_REAL, *WIDE], "[swd,alignment,diversity]", "train"),
    "t2f_real": (T2F_REAL, "[swd,alignment,diversity]", "train"),
    "t2f_real_ns_r1": ([*T2F_REAL, *NS_R1], "[swd,alignment,diversity]", "train"),
    "t2f_real_lr001": ([*T2F_REAL, "model.schedule.lr=0.001"], "[swd,alignment,diversity]", "train"),
    "t2f": (["model=t2f"], "[swd,alignment,diversity]", "train"),
    "t2f_ms1": (["model=t2f", "model.loss.mode_seeking=1"], "[swd,alignment,diversity]", "train"),
    "t2f_ms2": (["model=t2f", "model.loss.mode_seeking=2"], "[swd,alignment,diversity]", "train"),
    "t2f_ms1_noimgwords": (["model=t2f", "model.loss.mode_seeking=1", "model.text.word_prediction.image=0"],
                           "[swd,alignment,diversity]", "train"),
    "t2f_ms1_c1": (["model=t2f", "model.loss.mode_seeking=1", "model.text.contrastive.weight=1"],
                   "[swd,alignment,diversity]", "train"),
    "t2f_ms1_lr": (["model=t2f", "model.loss.mode_seeking=1", "model.schedule.lr.4=0.005", "model.schedule.lr.32=0.002"],
                   "[swd,alignment,diversity]", "train"),
    # issue 16's remaining T2F runs at 32 px (twin word head, experiment=t2f_celeba32's budget and longer)
    "t2f_former_preset": (FORMER_PRESET, "[swd,alignment,diversity]", "train"),
    "t2f_former_preset_300": ([*FORMER_PRESET, "model.schedule.kimg=300"], "[swd,alignment,diversity]", "train"),
    "t2f_twin2_c025": ([*TWIN, "model.text.word_prediction.image=2"], "[swd,alignment,diversity]", "train"),
    "t2f_twin1_c025_seed1": ([*TWIN, "model.text.word_prediction.image=1", "seed=1"],
                             "[swd,alignment,diversity]", "train"),
    "t2f_twin3_c025_seed1": ([*TWIN, "model.text.word_prediction.image=3", "seed=1"],
                             "[swd,alignment,diversity]", "train"),
    # the twin preset with each word's presence weighed by its rarity (fifteenth session; t2f_balance05 is
    # experiment=t2f_celeba32 without its word reader)
    "t2f_balance05": ([*TWIN, "model.text.word_prediction.image=1", "model.text.word_prediction.balance=0.5"],
                      "[swd,alignment,diversity]", "train"),
    "t2f_balance1": ([*TWIN, "model.text.word_prediction.image=1", "model.text.word_prediction.balance=1"],
                     "[swd,alignment,diversity]", "train"),
    # the word head and its twin reading a critic trunk of their own (sixteenth session; part of
    # experiment=t2f_celeba32 since the seventeenth)
    "t2f_word_reader": (["experiment=t2f_celeba32", "model/text/word_reader=progan"], "[swd,alignment,diversity]",
                        "train"),
    # 64 px (no growth, each model's defaults otherwise); the *_lr005 jobs are the 0.005 that collapsed
    # there before 64 px got 0.002 (README, "64 px")
    "dcgan_64": (["model=dcgan", "dataset.resolution=64", "model.total_kimg=200"], "[swd]", "train"),
    "stylegan_64": (["model=stylegan", "dataset.resolution=64"], "[swd]", "train"),
    "stylegan_64_lr005": (["model=stylegan", "dataset.resolution=64", "model.schedule.lr=0.005"], "[swd]", "train"),
    "t2f_64": (["experiment=t2f_celeba32", "dataset.resolution=64"], "[swd,alignment,diversity]", "train"),
    "t2f_64_lr005": ([*FORMER_PRESET, "dataset.resolution=64", "model.schedule.lr.64=0.005"],
                     "[swd,alignment,diversity]", "train"),
    "dcgan_1k": (["model=dcgan", *SUBSET], "[swd]", "val"),
    "dcgan_1k_diffaug": (["model=dcgan", *SUBSET, AUGMENT], "[swd]", "val"),
    "dcgan_1k_ada": (["model=dcgan", *SUBSET, AUGMENT, "model.augment.ada_target=0.6"], "[swd]", "val"),
}

SMOKE = ["dataset.resolution=16", "metrics.every_kimg=0.05", "metrics.num_samples=64", "metrics.num_real=64",
         "metrics.swd.min_resolution=16"]


def smoke_length(overrides: list[str]) -> list[str]:
    """A few batches: DCGAN by total_kimg, progressive models by their per-stage kimg (runs without
    growth start at the smoke resolution, 16 px)."""
    progressive = any(o in ("model=stylegan", "model=t2f") or o.startswith("experiment=t2f") for o in overrides)
    flat = any(o.startswith("model.schedule.start_resolution") for o in overrides)
    kept = [o for o in overrides if not o.startswith(("model.total_kimg", "model.schedule.kimg",
                                                      "model.schedule.start_resolution"))]
    return (kept + (["model.schedule.kimg=0.05"] if progressive else ["model.total_kimg=0.2"])
            + (["model.schedule.start_resolution=16"] if flat else []))


def train_until(args: list[str], log_path: Path, env: dict, deadline: float | None) -> int:
    """Run ``run.py``; at the deadline (time.time()) ask it to stop (SIGTERM: Lightning saves
    ``last.ckpt`` and exits), so a cut study still has every run's checkpoint to score."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            return proc.wait(timeout=None if deadline is None else max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return -15


def resolution(overrides: list[str]) -> int:
    """The job's ``dataset.resolution`` (32 unless it names another)."""
    named = [o.split("=", 1)[1] for o in overrides if o.startswith("dataset.resolution=")]
    return int(named[-1]) if named else 32


def run_job(name: str, data: dict[int, str], out: Path, smoke: bool, deadline: float | None = None,
            seeds: int = 1) -> dict:
    overrides, metrics, split = JOBS[name]
    job = out / name
    job.mkdir(parents=True, exist_ok=True)
    res = resolution(overrides)
    overrides = [o for o in overrides if not o.startswith("dataset.resolution=")]
    train_args = ["dataset=celeba", f"dataset.root={data.get(res, data[32])}", f"dataset.resolution={res}",
                  "dataset.num_workers=1",
                  "logger=csv", "print_config=false", f"hydra.run.dir={job / 'run'}",
                  "callbacks.progress_bar.refresh_rate=500", "callbacks.samples.every_kimg=50",
                  *overrides, *CURVE]
    if smoke:
        train_args = smoke_length(train_args) + SMOKE
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    rc = train_until(train_args, job / "train.log", env, deadline)
    train_s = time.time() - t0
    result: dict = {"name": name, "train_args": train_args, "train_rc": rc, "train_s": round(train_s, 1)}
    ckpt = job / "run" / "checkpoints" / "last.ckpt"
    result["curve"] = swd_curve(job / "run")
    if not ckpt.is_file():
        return result
    n = 64 if smoke else 2000
    real = 64 if smoke else (500 if split == "val" else 2000)
    eval_args = [f"ckpt={ckpt}", f"metrics={metrics}", f"num_samples={n}", f"num_real={real}",
                 f"metrics.real_split={split}", f"seeds={seeds}", f"out={job / 'eval.json'}"]
    with open(job / "eval.log", "w") as log:
        result["eval_rc"] = subprocess.call([sys.executable, "-m", "t2f.evaluate", *eval_args], cwd=REPO,
                                            env=env, stdout=log, stderr=subprocess.STDOUT)
    result["eval_args"] = eval_args
    if (job / "eval.json").is_file():
        report = json.loads((job / "eval.json").read_text())
        result["kimg"] = report.get("kimg")
        result["scores"] = {k: v["mean"] for k, v in report["metrics"].items()
                            if isinstance(v, dict) and isinstance(v.get("mean"), (int, float))}
    colour = subprocess.run([sys.executable, str(REPO / "experiments" / "colour_noise.py"), str(ckpt), "--json",
                             "--n", "64" if smoke else "512"], cwd=REPO, env=env, capture_output=True, text=True)
    (job / "colour.log").write_text(colour.stdout + colour.stderr)  # why, when its columns stay empty
    result["colour_rc"] = colour.returncode
    lines = [line for line in colour.stdout.splitlines() if line.startswith("{")]
    if lines:
        result["colour_noise"] = json.loads(lines[-1])
    return result


def swd_curve(run: Path) -> list[tuple[float, float]]:
    """(kimg, metrics/swd) pairs from the run's metrics.csv."""
    files = sorted(run.rglob("metrics.csv"))
    points: list[tuple[float, float]] = []
    for f in files:
        with open(f) as fh:
            for row in csv.DictReader(fh):
                if row.get("metrics/swd") and row.get("kimg"):
                    points.append((round(float(row["kimg"]), 1), round(float(row["metrics/swd"]), 2)))
    return points


SHOWN = ["swd", "alignment", "diversity", "alignment_accuracy", "alignment_accuracy_real", "r_precision",
         "r_precision_real"]


def table(results: list[dict]) -> str:
    lines = ["| job | kimg | train min | " + " | ".join(SHOWN)
             + " | hf chroma / real | out of [-1,1] | SWD curve (kimg: swd) |", "|---" * (len(SHOWN) + 6) + "|"]
    for r in results:
        s = r.get("scores", {})
        cells = [f"{s[k]:.3g}" if k in s else "" for k in SHOWN]
        colour = r.get("colour_noise", {})
        cells += [f"{colour[k]:.3g}" if k in colour else "" for k in ("hf_chroma_ratio", "out_of_range")]
        curve = ", ".join(f"{k:g}: {v:g}" for k, v in r.get("curve", []))
        status = "" if r.get("train_rc") == 0 and r.get("eval_rc") == 0 else f" (rc {r.get('train_rc')}/{r.get('eval_rc')})"
        lines.append(f"| {r['name']}{status} | {r.get('kimg') or ''} | {r['train_s'] / 60:.1f} | "
                     + " | ".join(cells) + f" | {curve} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the CelebA root (official layout)")
    parser.add_argument("--data-64", default=None,
                        help="the CelebA root for the 64 px jobs (default --data), e.g. a copy resized to 64 px")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seeds", type=int, default=1, help="sampling seeds of each evaluation (mean ± std)")
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(JOBS))
    parser.add_argument("--parallel", type=int, default=len(JOBS))
    parser.add_argument("--smoke", action="store_true", help="a few batches per job at 16 px")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds of training: then every run still going is stopped (and still scored)")
    args = parser.parse_args()
    names = args.only or list(JOBS)
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        deadline = None if args.deadline is None else time.time() + args.deadline
        data = {32: args.data, 64: args.data_64 or args.data}
        results = list(pool.map(lambda n: run_job(n, data, args.out, args.smoke, deadline, args.seeds), names))
    summary = {"command": " ".join(sys.argv), "results": results}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    text = table(results)
    (args.out / "summary.md").write_text(text + "\n")
    print(text)
    return 0 if all(r.get("train_rc") == 0 and r.get("eval_rc") == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
