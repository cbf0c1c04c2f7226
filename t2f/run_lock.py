"""One training process per run directory: ``<run>/.lock`` names the process that trains there.

Two runs started with the same ``hydra.run.dir`` would interleave their logs, sample grids and
checkpoints; the second is refused with one line that names the first. A lock whose process is
gone (killed with -9, crashed, the machine rebooted) is stale and taken over, so a restarted job
resumes without a manual step; so is one left by the same SLURM job on another node (a requeued
job keeps its id). Only rank 0 takes the lock: DDP workers rerun the command in the same directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from t2f.utils import ConfigError

LOCK_NAME = ".lock"

__all__ = ["LOCK_NAME", "Owner", "run_directory_lock"]


@dataclass(frozen=True)
class Owner:
    """Who holds a lock: enough to tell whether that process still runs."""

    pid: int
    host: str
    started: str  # the process's start time in /proc (Linux): a reused pid is not the owner
    job: str  # SLURM_JOB_ID, or ""
    since: str  # when the lock was taken, for the message

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        return cls(pid, socket.gethostname(), _start_time(pid), os.environ.get("SLURM_JOB_ID", ""),
                   time.strftime("%Y-%m-%d %H:%M:%S"))

    @classmethod
    def read(cls, path: Path) -> Owner | None:
        """The owner recorded in ``path``; None when it cannot be read (a lock nobody holds)."""
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def is_gone(self) -> bool:
        """True when this owner surely no longer runs (so its lock is stale)."""
        if self.host != socket.gethostname():
            return bool(self.job) and self.job == os.environ.get("SLURM_JOB_ID")  # requeued elsewhere
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # another user's live process
            return False
        return bool(self.started) and _start_time(self.pid) not in ("", self.started)  # pid reused


def _start_time(pid: int) -> str:
    """Field 22 of ``/proc/<pid>/stat`` (start time since boot), "" where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def _create(path: Path, owner: Owner) -> bool:
    """Write ``path`` holding ``owner`` only if it does not exist (complete or not at all)."""
    text = json.dumps(asdict(owner))
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(text)
    try:
        os.link(tmp, path)  # atomic, and fails when the lock exists
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: exclusive creation instead
        try:
            with open(path, "x") as f:
                f.write(text)
            return True
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)


def acquire(directory: str | os.PathLike) -> Path:
    """Take ``<directory>/.lock`` for this process, taking over a stale one; refuse a held one."""
    path = Path(directory) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    me = Owner.me()
    for _ in range(3):  # a racing process may remove or take a stale lock between our steps
        if _create(path, me):
            return path
        owner = Owner.read(path)
        if owner is not None and (owner.pid, owner.host, owner.started) == (me.pid, me.host, me.started):
            return path  # this process's own lock (an earlier call that never released it)
        if owner is not None and not owner.is_gone():
            raise ConfigError(
                f"the run directory {directory} is in use by another run (pid {owner.pid} on {owner.host}, "
                f"since {owner.since}): wait for it to end or choose another hydra.run.dir "
                f"(delete {path} if that process is gone)")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # stale: its process is gone
    raise ConfigError(f"could not take the lock {path}: another process keeps replacing it")


def release(path: Path) -> None:
    """Remove the lock if it is still this process's own."""
    owner = Owner.read(path)
    if owner is not None and owner.pid == os.getpid() and owner.host == socket.gethostname():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def run_directory_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold the run directory's lock for the block (rank 0 only; other ranks share rank 0's)."""
    from pytorch_lightning.utilities import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        yield
        return
    path = acquire(directory)
    try:
        yield
    finally:
        release(path)
