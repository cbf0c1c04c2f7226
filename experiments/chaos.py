"""Kill -9 a training run at random moments, resume it each time, and check what was lost.

    python experiments/chaos.py [--kills 8] [--seed 0] [--workdir DIR] [overrides ...]

Trains a tiny T2F (4 -> 32 px with fade-ins, batches of 8 then 4 from 16 px, last.ckpt and a
snapshot every 8 images, ``trainer.deterministic=true``) once without interruption, then again
in a second run directory, killed with SIGKILL ``--kills`` times and restarted there after each
kill (auto-resume, as a requeued job would). Odd kills come at a random moment of training,
timed from the run's "Run directory:" line; even ones inside a random checkpoint save of the
next few: the training process kills itself halfway through writing last.ckpt's temporary file
(``write``), after writing it but before renaming it over last.ckpt (``rename``), or halfway
through copying last.ckpt to a snapshot (``snapshot``), in turn. The kills are spread over the
run: each comes within an equal share of what is left. After each kill it reads what a restart
will find. It prints per kill what happened, then:

- kills survived: the process started after the kill ran without an error (until the next kill,
  or to the end);
- checkpoints lost: kills after which last.ckpt was unreadable and no snapshot readable either;
- whether the final weights, buffers and optimizer states equal the uninterrupted run's
  (``torch.equal`` on every tensor).

Extra arguments are Hydra overrides for both runs. Results: ``experiments/results/chaos.md``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SAVE_EVERY_IMAGES = 8
# 8 px wide nets on 96 synthetic faces; 0.064 kimg per stage: 48 batches, 32 saves
TINY_T2F = [
    "model=t2f", "dataset.size=96", "dataset.val_size=16", "dataset.batch_size=8", "logger=csv",
    "print_config=false", "callbacks.progress_bar.refresh_rate=0", "trainer.deterministic=true",
    "model.generator.fmap_base=64", "model.discriminator.fmap_base=64", "model.generator.fmap_max=16",
    "model.discriminator.fmap_max=16", "model.generator.noise_dim=8", "model.generator.condition_dim=8",
    "model.text.encoder.embedding_dim=8", "model.text.encoder.hidden_dim=16", "model.ema_half_life_kimg=0.01",
    "model.schedule.kimg=0.064", "model.schedule.batch_size={4: 8, 16: 4}",
    f"callbacks.checkpoint.every_kimg={SAVE_EVERY_IMAGES / 1000}", "callbacks.samples.every_kimg=0.064",
]
PHASES = ("write", "rename", "snapshot")
STARTED = "Run directory:"  # printed by t2f.train just before fitting


# -- the training process ---------------------------------------------------------------------

def die_inside_save(spec: str) -> None:
    """In the training process: SIGKILL itself in its n-th save, at ``phase`` (``"phase:n"``). A
    tiny model saves in milliseconds, so kills timed from outside seldom land inside a save."""
    phase, n = spec.split(":")
    calls, target = itertools.count(1), int(n)

    def due(name: str, wanted: str) -> bool:
        return name.startswith(wanted) and next(calls) == target

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    real_save, real_replace, real_copy = torch.save, os.replace, shutil.copyfileobj

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if phase == "write" and due(os.path.basename(getattr(f, "name", "")), ".last.ckpt.tmp-"):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            f.write(buffer.getbuffer()[: buffer.tell() // 2])
            f.flush()
            die()
        real_save(obj, f, *args, **kwargs)

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if phase == "rename" and due(os.path.basename(os.fspath(dst)), "last.ckpt"):
            die()
        real_replace(src, dst, *args, **kwargs)

    def copy(src: Any, dst: Any, length: int = 0) -> None:
        if phase == "snapshot" and due(os.path.basename(getattr(dst, "name", "")), ".snapshot-"):
            dst.write(src.read(os.fstat(src.fileno()).st_size // 2))
            dst.flush()
            die()
        real_copy(src, dst, length)

    torch.save, os.replace, shutil.copyfileobj = save, replace, copy


def child_main(overrides: list[str]) -> None:
    """``chaos.py --child OVERRIDES``: ``python run.py OVERRIDES``, dying where T2F_CHAOS_DIE says."""
    if os.environ.get("T2F_CHAOS_DIE"):
        die_inside_save(os.environ["T2F_CHAOS_DIE"])
    from t2f.cli import train_main

    sys.argv = [str(REPO / "run.py"), *overrides]
    train_main()


# -- the experimenter -------------------------------------------------------------------------

class Child:
    """One training process in ``run``; its output goes to ``log``, and ``started`` is set at the
    run's start line."""

    def __init__(self, run: Path, overrides: list[str], log: Path, die: str | None = None) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
        env.pop("T2F_CHAOS_DIE", None)
        if die:
            env["T2F_CHAOS_DIE"] = die
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", *overrides, f"hydra.run.dir={run}"], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.started = threading.Event()
        self.started_at = 0.0
        self._reader = threading.Thread(target=self._read, args=(log,), daemon=True)
        self._reader.start()

    def _read(self, log: Path) -> None:
        with open(log, "w") as out:
            for line in self.proc.stdout:
                out.write(line)
                if STARTED in line and not self.started.is_set():
                    self.started_at = time.monotonic()
                    self.started.set()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join()
        return code

    def kill(self) -> int:
        self.proc.kill()
        return self.wait()


@dataclass
class Found:
    """What a restart finds in a checkpoint directory."""

    written: bool  # a checkpoint was ever written there
    last_readable: bool
    snapshot_readable: bool
    images: int  # images seen in the checkpoint a restart resumes from (0: none, it starts over)
    where: str  # its resolution and fade-in alpha
    temporaries: int  # files of interrupted saves (the next start removes them)

    @property
    def lost(self) -> bool:
        return self.written and not self.last_readable and not self.snapshot_readable

    @property
    def summary(self) -> str:
        if self.last_readable:
            return "last.ckpt readable"
        if self.snapshot_readable:
            return "last.ckpt unreadable, a snapshot readable"
        return "nothing readable: checkpoint LOST" if self.written else "no checkpoint written yet"


def inspect(ckpt_dir: Path) -> Found:
    from t2f.callbacks.checkpoint import snapshots
    from t2f.train import _unreadable  # the test the resume itself applies

    last = ckpt_dir / "last.ckpt"
    last_ok = last.is_file() and _unreadable(str(last)) is None
    readable = [p for p in snapshots(ckpt_dir) if _unreadable(p) is None]
    source = str(last) if last_ok else (readable[0] if readable else None)
    state = torch.load(source, weights_only=True)["t2f"] if source else {"images_seen": 0, "stage": 0, "alpha": 1.0}
    images, where = state["images_seen"], f"{2 ** (state['stage'] + 2)} px, alpha {state['alpha']:.2f}"
    temporaries = sum(1 for p in ckpt_dir.glob(".*.tmp-*")) if ckpt_dir.is_dir() else 0
    written = last.exists() or bool(snapshots(ckpt_dir))
    return Found(written, last_ok, bool(readable), images, where, temporaries)


def tensors(value: Any, name: str = "") -> list[tuple[str, torch.Tensor]]:
    """Every tensor in nested dicts and lists, by path, in a fixed order."""
    if torch.is_tensor(value):
        return [(name, value)]
    if isinstance(value, dict):
        return [t for key in sorted(value, key=str) for t in tensors(value[key], f"{name}.{key}")]
    if isinstance(value, (list, tuple)):
        return [t for i, item in enumerate(value) for t in tensors(item, f"{name}.{i}")]
    return []


def compare(a: Path, b: Path) -> tuple[bool, int, float]:
    """(every tensor equal, tensors compared, largest difference) of two checkpoints' weights,
    buffers and optimizer states."""
    ours, theirs = ([*tensors(ckpt["state_dict"], "state_dict"), *tensors(ckpt["optimizer_states"], "optimizer")]
                    for ckpt in (torch.load(a, weights_only=True), torch.load(b, weights_only=True)))
    if [n for n, _ in ours] != [n for n, _ in theirs]:
        return False, len(ours), float("inf")
    equal = all(torch.equal(x, y) for (_, x), (_, y) in zip(ours, theirs))
    worst = max((float((x.double() - y.double()).abs().max()) for (_, x), (_, y) in zip(ours, theirs)
                 if x.is_floating_point() and x.numel()), default=0.0)
    return equal, len(ours), worst


@dataclass
class Reference:
    """The uninterrupted run: images trained, and seconds from its start line to its end."""

    images: int
    seconds: float


def kill_once(rng: np.random.Generator, how: str, run: Path, overrides: list[str], log: Path,
              share: float, reference: Reference) -> tuple[str, int]:
    """Start a training process in ``run`` and SIGKILL it within ``share`` of the reference's
    training (at random): ``timed``, at a moment (the run's seconds), else inside a save (its
    images), at phase ``how``. Returns what was done and the exit status (0: it finished first)."""
    if how == "timed":
        child = Child(run, overrides, log)
        while not child.started.wait(0.1) and child.proc.poll() is None:
            pass
        delay = rng.uniform(0.0, 1.0) * share * reference.seconds
        code = child.wait(timeout=delay)
        return f"{delay:.1f} s into training", child.kill() if code is None else code
    nth = int(rng.integers(1, max(1, round(share * reference.images / SAVE_EVERY_IMAGES)) + 1))
    return f"inside save {nth} ({how})", Child(run, overrides, log, die=f"{how}:{nth}").wait()


def run_chaos(kills: int, seed: int, workdir: Path, overrides: list[str]) -> None:
    rng = np.random.default_rng(seed)
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"Work directory: {workdir}", flush=True)

    t0 = time.monotonic()
    straight = Child(workdir / "straight", overrides, logs / "straight.txt")
    if straight.wait() != 0:
        raise SystemExit(f"the uninterrupted run failed: see {logs / 'straight.txt'}")
    reference = Reference(inspect(workdir / "straight" / "checkpoints").images, time.monotonic() - straight.started_at)
    print(f"uninterrupted run: {reference.images} images, {time.monotonic() - t0:.0f} s "
          f"({reference.seconds:.0f} s from its start line)", flush=True)

    run, ckpt_dir = workdir / "chaos", workdir / "chaos" / "checkpoints"
    done = survived = lost = fallbacks = 0
    code = -signal.SIGKILL
    for k in range(1, kills + 1):
        left = 1 - inspect(ckpt_dir).images / reference.images
        plan = "timed" if k % 2 else PHASES[(k // 2 - 1) % len(PHASES)]  # every other kill inside a save
        log = logs / f"attempt{k:02d}.txt"
        how, code = kill_once(rng, plan, run, overrides, log, left / (kills - k + 2), reference)
        if code != -signal.SIGKILL:
            print(f"attempt {k}: the run {'finished before the kill' if code == 0 else 'FAILED'}", flush=True)
            break
        survived += done > 0  # the process started after the previous kill ran on until this one
        done += 1
        found = inspect(ckpt_dir)
        lost += found.lost
        fallbacks += found.written and not found.last_readable and found.snapshot_readable
        print(f"kill {k}: {how}; {found.summary}; a restart resumes at {found.images} images "
              f"({found.where}; temporary files there: {found.temporaries})", flush=True)
    if code == -signal.SIGKILL:  # after the last kill: once more, to the end
        code = Child(run, overrides, logs / "final.txt").wait()
    if code != 0:
        raise SystemExit(f"a restart failed (exit {code}): see the newest log in {logs}")
    survived += done > 0
    stale = sum(1 for _ in ckpt_dir.glob(".*.tmp-*"))
    equal, count, worst = compare(workdir / "straight" / "checkpoints" / "last.ckpt", ckpt_dir / "last.ckpt")
    print(f"\nkills: {done}; kills survived: {survived}/{done}; checkpoints lost: {lost} "
          f"(restarts from a snapshot: {fallbacks}); temporary files of killed saves left at the end: {stale}")
    print(f"final weights equal to the uninterrupted run's: {'yes' if equal else 'NO'} "
          f"(torch.equal on {count} tensors of state_dict and optimizer states; largest difference {worst:.3g})")
    print(f"wall time: {time.monotonic() - t0:.0f} s")


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs to send (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--workdir", type=Path, default=None, help="where both runs go (default: a new temporary folder)")
    args, overrides = parser.parse_known_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="t2f-chaos-"))
    run_chaos(args.kills, args.seed, workdir.resolve(), [*TINY_T2F, *overrides])


if __name__ == "__main__":
    main()
